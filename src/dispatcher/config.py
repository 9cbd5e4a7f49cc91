"""Configuration: built-in defaults, then a TOML file, then DISPATCHER_* environment
variables, loaded into frozen dataclasses. Any unknown key or bad value fails at
start with the key's dotted name and the reason."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from dispatcher.errors import ConfigError
from dispatcher.retry import RetryPolicyConfig as RetryPolicyConfig
from dispatcher.retry import policy_names, validate_policies

ENV_PREFIX = "DISPATCHER_"
# Short names kept for the variables operators set most often.
ENV_ALIASES = {
    "DISPATCHER_DATABASE_URL": ("database", "url"),
    "DISPATCHER_DATA_DIR": ("database", "data_dir"),
    "DISPATCHER_MASTER_KEY": ("signing", "master_key"),
}
SECRET_KEYS = {("signing", "master_key"), ("database", "url")}


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    grace_period_seconds: float = 10.0
    max_body_bytes: int = 1048576
    max_batch_events: int = 500
    max_endpoints_per_tenant: int = 1000
    max_event_types_per_tenant: int = 500
    max_deliveries_per_publish: int = 100000
    idempotency_window_seconds: int = 86400
    workers: int = 0  # worker processes; 0: one per CPU
    role: Literal["all", "api", "worker"] = "all"
    header_timeout_seconds: float = 10.0  # a started request's headers, complete
    body_timeout_seconds: float = 30.0  # a request's body, complete
    keepalive_seconds: float = 75.0  # an idle connection (or one that sends nothing)
    max_connections: int = 2000  # per worker process
    auth_failure_limit: int = 20  # failed authentications per address and window; 0 = off
    auth_failure_window_seconds: float = 60.0
    trusted_proxies: list[str] = field(default_factory=list)  # CIDRs sending X-Forwarded-For
    # A dropped `dispatcher listen` connection's endpoint is removed after this long.
    listen_grace_seconds: float = 10.0
    # Where customers reach this server (portal links point there); empty: the
    # scheme and host of the request that made the link.
    public_url: str = ""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""
    data_dir: str = "./var"
    pool_min_size: int = 4
    pool_max_size: int = 10


@dataclass(frozen=True)
class DeliveryConfig:
    timeout_seconds: float = 2.0
    max_concurrency: int = 100
    claim_batch_size: int = 500
    # A claim takes no more events than fit in this many bytes of bodies (one body
    # per event, shared by its deliveries); the first event always goes.
    claim_max_bytes: int = 64 * 1024 * 1024
    batches_in_flight: int = 3
    poll_interval_seconds: float = 1.0
    lease_seconds: float = 60.0
    default_max_in_flight: int = 10
    default_retry_policy: str = "standard"
    retry_after_cap_seconds: int = 3600
    rate_limit_backoff_seconds: float = 1.0
    max_rate_limited_attempts: int = 100  # per delivery; beyond it they count as failures
    adaptive_concurrency: bool = True
    success_statuses: list[int] = field(default_factory=list)
    response_body_limit: int = 4096
    enabled: bool = True
    writer_stall_seconds: float = 30.0
    # Every delivery and token fetch goes through this forward proxy (static egress IPs).
    proxy_url: str = ""


@dataclass(frozen=True)
class SigningConfig:
    default_scheme: str = "standard-v1"
    rotation_overlap_seconds: int = 86400
    master_key: str = ""


@dataclass(frozen=True)
class UrlPolicyConfig:
    max_length: int = 500
    allow_http: bool = False
    allow_any_port: bool = False
    allow_private_networks: bool = False


@dataclass(frozen=True)
class HealthConfig:
    window_seconds: int = 604800
    window_threshold: int = 100
    total_threshold: int = 500
    warn_percentages: list[int] = field(default_factory=lambda: [50, 70, 90])
    hold_limit_seconds: int = 259200
    resume_rate_per_second: int = 50
    retention_days: int = 30
    maintenance_interval_seconds: float = 30.0


@dataclass(frozen=True)
class CallbacksConfig:
    default_deadline_seconds: float = 300.0
    max_deadline_seconds: float = 86400.0
    retry_policy: str = "callback"  # the policy of new callback endpoints
    expire_interval_seconds: float = 1.0  # how often overdue callbacks are failed


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = True
    title: str = "dispatcher"
    logo_url: str = ""
    accent_color: str = "#2457c5"
    session_hours: float = 12.0
    # A `dispatcher sandbox capture` receiver whose requests the sandbox page shows.
    sandbox_capture_url: str = ""
    # Origins that may show the console (the portal) in an iframe; empty: none may.
    frame_ancestors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TelemetryConfig:
    enabled: bool = False  # OpenTelemetry traces over OTLP/HTTP (pip install dispatcher[telemetry])
    service_name: str = "dispatcher"  # OTEL_SERVICE_NAME wins
    # OTLP/HTTP traces URL; empty: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, else localhost:4318.
    endpoint: str = ""
    sample_ratio: float = 1.0  # of new traces (incoming sampled traces are kept)


@dataclass(frozen=True)
class MetricsConfig:
    per_tenant: bool = True  # dispatcher_tenant_attempts{tenant_id}: one series per tenant
    per_endpoint: bool = False  # attempt durations by endpoint_id: one series per endpoint


@dataclass(frozen=True)
class AuditConfig:
    # Days an audit entry is kept; 0 follows health.retention_days. Never shorter.
    retention_days: int = 0

    def kept_days(self, health: HealthConfig) -> int:
        return max(self.retention_days, health.retention_days)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    urls: UrlPolicyConfig = field(default_factory=UrlPolicyConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    retry_policies: dict[str, RetryPolicyConfig] = field(default_factory=dict)
    event_types: dict[str, dict[str, Any]] = field(default_factory=dict)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


# Range checks beyond the type: (section, key) -> (predicate, reason).
_CHECKS: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("server", "port"): (lambda v: 0 <= v <= 65535, "must be between 0 and 65535"),
    ("server", "grace_period_seconds"): (lambda v: v >= 0, "must be >= 0"),
    ("server", "max_body_bytes"): (lambda v: v > 0, "must be > 0"),
    ("server", "max_endpoints_per_tenant"): (lambda v: v >= 1, "must be >= 1"),
    ("server", "max_event_types_per_tenant"): (lambda v: v >= 1, "must be >= 1"),
    ("server", "max_deliveries_per_publish"): (lambda v: v >= 1, "must be >= 1"),
    ("server", "workers"): (lambda v: 0 <= v <= 256, "must be between 0 and 256"),
    ("server", "header_timeout_seconds"): (lambda v: v >= 0, "must be >= 0 (0 = no limit)"),
    ("server", "body_timeout_seconds"): (lambda v: v >= 0, "must be >= 0 (0 = no limit)"),
    ("server", "keepalive_seconds"): (lambda v: v > 0, "must be > 0"),
    ("server", "max_connections"): (lambda v: v >= 0, "must be >= 0 (0 = no limit)"),
    ("server", "auth_failure_limit"): (lambda v: v >= 0, "must be >= 0 (0 = off)"),
    ("server", "auth_failure_window_seconds"): (lambda v: v > 0, "must be > 0"),
    ("server", "trusted_proxies"): (lambda v: all(_is_network(c) for c in v),
                                    "must be a list of IP networks such as 10.0.0.0/8"),
    ("database", "pool_min_size"): (lambda v: v >= 1, "must be >= 1"),
    ("database", "pool_max_size"): (lambda v: v >= 2, "must be >= 2"),
    ("delivery", "timeout_seconds"): (lambda v: 0.1 <= v <= 30, "must be between 0.1 and 30"),
    ("delivery", "max_concurrency"): (lambda v: v >= 1, "must be >= 1"),
    ("delivery", "claim_batch_size"): (lambda v: 1 <= v <= 5000, "must be between 1 and 5000"),
    ("delivery", "claim_max_bytes"): (lambda v: v >= 1, "must be at least 1 byte"),
    ("delivery", "batches_in_flight"): (lambda v: v >= 1, "must be >= 1"),
    ("delivery", "poll_interval_seconds"): (lambda v: v > 0, "must be > 0"),
    ("delivery", "lease_seconds"): (lambda v: v >= 5, "must be >= 5"),
    ("delivery", "writer_stall_seconds"): (lambda v: v > 0, "must be > 0"),
    ("delivery", "default_max_in_flight"): (lambda v: v >= 1, "must be >= 1"),
    ("delivery", "max_rate_limited_attempts"): (lambda v: v >= 1, "must be >= 1"),
    ("delivery", "rate_limit_backoff_seconds"): (lambda v: 0 < v <= 3600,
                                                 "must be between 0 and 3600"),
    ("delivery", "proxy_url"): (
        lambda v: v == "" or is_proxy_url(v),
        "must be empty or an http://, https:// or socks5:// URL with a host and port",
    ),
    ("delivery", "success_statuses"): (
        lambda v: all(200 <= s <= 299 for s in v),
        "must list 2xx statuses only",
    ),
    ("health", "window_threshold"): (lambda v: v >= 1, "must be >= 1"),
    ("health", "total_threshold"): (lambda v: v >= 1, "must be >= 1"),
    ("health", "warn_percentages"): (
        lambda v: all(0 < p < 100 for p in v),
        "must be percentages between 1 and 99",
    ),
    ("console", "title"): (lambda v: 1 <= len(v) <= 100, "must be 1 to 100 characters"),
    ("console", "logo_url"): (
        lambda v: v == "" or (v.startswith(("https://", "/")) and len(v) <= 2000
                              and not any(c.isspace() or c in "\"'<>" for c in v)),
        "must be empty, an https:// URL or a path starting with /",
    ),
    ("console", "accent_color"): (
        lambda v: re.fullmatch(r"#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6}", v) is not None,
        "must be a colour as #rgb or #rrggbb",
    ),
    ("console", "frame_ancestors"): (
        lambda v: all(re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", o) for o in v),
        "must be a list of origins such as https://dashboard.example.com (scheme, host, "
        "optional port; no path)",
    ),
    ("console", "session_hours"): (lambda v: 0 < v <= 720, "must be between 0 and 720"),
    ("console", "sandbox_capture_url"): (
        lambda v: v == "" or v.startswith(("http://", "https://")),
        "must be empty or an http(s) URL",
    ),
    ("callbacks", "default_deadline_seconds"): (lambda v: v >= 1, "must be >= 1"),
    ("callbacks", "max_deadline_seconds"): (lambda v: v >= 1, "must be >= 1"),
    ("callbacks", "expire_interval_seconds"): (lambda v: v > 0, "must be > 0"),
    ("audit", "retention_days"): (lambda v: v >= 0, "must be >= 0 (0 = health.retention_days)"),
    ("telemetry", "sample_ratio"): (lambda v: 0 <= v <= 1, "must be between 0 and 1"),
    ("telemetry", "endpoint"): (lambda v: v == "" or v.startswith(("http://", "https://")),
                                "must be empty or an http(s) URL"),
    ("log", "level"): (
        lambda v: v.lower() in {"debug", "info", "warning", "error"},
        "must be one of debug, info, warning, error",
    ),
}


def is_proxy_url(value: str) -> bool:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme in ("http", "https", "socks5", "socks5h") and bool(parts.hostname)
            and port is not None and parts.path in ("", "/") and not parts.query)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting where lossless."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table", field=where)
        return _build(tp, value, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(str, typing.get_args(tp)))
            raise ConfigError(f"{where}: must be one of {choices}, got {value!r}", field=where)
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}", field=where)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table", field=where)
        return {str(k): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is types.UnionType:
        raise ConfigError(f"{where}: unsupported type", field=where)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}", field=where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}", field=where)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}", field=where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}", field=where)
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}", field=where)


def _build(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown key", field=key)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _convert(value, hints[name], key)
        section = where.split(".")[0] if where else ""
        check = _CHECKS.get((section, name))
        if check and not check[0](kwargs[name]):
            raise ConfigError(f"{key}: {check[1]} (got {kwargs[name]!r})", field=key)
    return cls(**kwargs)


def _parse_env_value(raw: str) -> Any:
    """Env values are TOML literals when they parse as one, else plain strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if name in ENV_ALIASES:
            section, key = ENV_ALIASES[name]
            out.setdefault(section, {})[key] = raw  # these are always strings
            continue
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[key] = _parse_env_value(raw)
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Defaults < file (`path`, else $DISPATCHER_CONFIG) < DISPATCHER_* variables."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file = path or env.get("DISPATCHER_CONFIG")
    if file:
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {file}", field="DISPATCHER_CONFIG") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}", field="DISPATCHER_CONFIG") from exc
    data = _merge(data, _env_overrides(env))
    config: Config = _build(Config, data, "")
    _check_cross_fields(config)
    return config


def _check_cross_fields(config: Config) -> None:
    validate_policies(config.retry_policies)
    if config.delivery.default_retry_policy not in policy_names(config):
        raise ConfigError(
            "delivery.default_retry_policy: unknown policy "
            f"{config.delivery.default_retry_policy!r}",
            field="delivery.default_retry_policy",
        )
    if config.callbacks.retry_policy not in policy_names(config):
        raise ConfigError(
            f"callbacks.retry_policy: unknown policy {config.callbacks.retry_policy!r}",
            field="callbacks.retry_policy",
        )
    if config.callbacks.default_deadline_seconds > config.callbacks.max_deadline_seconds:
        raise ConfigError(
            "callbacks.default_deadline_seconds: must not exceed max_deadline_seconds",
            field="callbacks.default_deadline_seconds",
        )
    if 0 < config.audit.retention_days < config.health.retention_days:
        raise ConfigError(
            "audit.retention_days: must be 0 (follow health.retention_days) or at least "
            f"health.retention_days ({config.health.retention_days})",
            field="audit.retention_days",
        )
    if config.database.pool_min_size > config.database.pool_max_size:
        raise ConfigError(
            "database.pool_min_size: must not exceed pool_max_size",
            field="database.pool_min_size",
        )


def redacted(config: Config) -> dict[str, Any]:
    """The effective config as a plain dict, secrets replaced by '***'."""
    data = dataclasses.asdict(config)
    for section, key in SECRET_KEYS:
        if data[section][key]:
            data[section][key] = "***"
    return data
