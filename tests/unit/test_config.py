"""Config: defaults, the documented default.toml, file and env precedence, and
validation errors that name the dotted key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.config import Config, RetryPolicyConfig, load_config, redacted
from dispatcher.errors import ConfigError
from dispatcher.retry import PRESETS

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"
DEFAULT_TOML = CONFIG_DIR / "default.toml"
# Sections that are tables of user-named entries: documented by a commented example.
NAMED_TABLES = {"retry_policies", "event_types"}


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(**kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    return info.value


# --- default.toml is the full reference and cannot drift ------------------------------


def test_every_key_in_default_toml_equals_the_dataclass_default() -> None:
    documented = tomllib.loads(DEFAULT_TOML.read_text())
    defaults = dataclasses.asdict(Config())
    for section, keys in documented.items():
        assert section in defaults, f"default.toml has unknown section [{section}]"
        for key, value in keys.items():
            assert key in defaults[section], f"default.toml has unknown key {section}.{key}"
            expected = defaults[section][key]
            where = f"{section}.{key}: default.toml says {value!r}, the code {expected!r}"
            assert value == expected, where
            assert type(value) is type(expected), where


def test_every_dataclass_key_is_documented_in_default_toml() -> None:
    text = DEFAULT_TOML.read_text()
    documented = tomllib.loads(text)
    for section, keys in dataclasses.asdict(Config()).items():
        if section in NAMED_TABLES:
            # Empty by default; the file shows a commented example table instead.
            assert re.search(rf"^# \[{section}\.", text, re.M), f"no example for [{section}.*]"
            continue
        assert section in documented, f"section [{section}] missing from default.toml"
        missing = set(keys) - set(documented[section])
        assert not missing, f"[{section}] keys not in default.toml: {sorted(missing)}"


def test_the_commented_retry_policy_example_is_complete_and_valid(tmp_path: Path) -> None:
    text = DEFAULT_TOML.read_text()
    example = text[text.index("# [retry_policies.") :].split("\n\n")[0]
    uncommented = "\n".join(line[2:].split("  #")[0] for line in example.splitlines())
    parsed = tomllib.loads(uncommented)
    (name,) = parsed["retry_policies"]
    shown = set(parsed["retry_policies"][name])
    fields = {f.name for f in dataclasses.fields(RetryPolicyConfig)}
    assert fields - shown == {"delays"}  # named in the kind comment instead
    assert "delays = [" in example
    cfg = load_config(write(tmp_path, uncommented), environ={})
    assert cfg.retry_policies[name].kind == "exponential"


def test_default_toml_lists_exactly_the_preset_policies() -> None:
    line = next(
        ln for ln in DEFAULT_TOML.read_text().splitlines() if ln.startswith("default_retry_policy")
    )
    named = set(re.findall(r"[a-z][a-z0-9-]*", line.split("#", 1)[1])) - {"or", "retry", "policies"}
    assert named == set(PRESETS)


def test_loading_default_toml_gives_the_defaults() -> None:
    assert load_config(DEFAULT_TOML, environ={}) == Config()


def test_no_file_and_no_env_gives_the_defaults() -> None:
    assert load_config(environ={}) == Config()


# --- overrides ------------------------------------------------------------------------


def test_section_key_env_overrides_are_toml_literals() -> None:
    cfg = load_config(environ={
        "DISPATCHER_SERVER__PORT": "9000",
        "DISPATCHER_DELIVERY__TIMEOUT_SECONDS": "5",
        "DISPATCHER_URLS__ALLOW_HTTP": "true",
        "DISPATCHER_HEALTH__WARN_PERCENTAGES": "[50, 90]",
        "DISPATCHER_DELIVERY__SUCCESS_STATUSES": "[200, 201]",
        "DISPATCHER_SIGNING__DEFAULT_SCHEME": "cobo",  # not a TOML literal: a plain string
        "DISPATCHER_SERVER__HOST": "0.0.0.0",
        "DISPATCHER_LOG__LEVEL": '"debug"',  # a quoted TOML string works too
        "DISPATCHER_RETRY_POLICIES__QUICK": '{ kind = "fixed", delays = [1, 2] }',
    })
    assert cfg.server.port == 9000
    assert cfg.delivery.timeout_seconds == 5.0
    assert isinstance(cfg.delivery.timeout_seconds, float)
    assert cfg.urls.allow_http is True
    assert cfg.health.warn_percentages == [50, 90]
    assert cfg.delivery.success_statuses == [200, 201]
    assert cfg.signing.default_scheme == "cobo"
    assert cfg.server.host == "0.0.0.0"
    assert cfg.log.level == "debug"
    assert cfg.retry_policies["quick"].delays == [1.0, 2.0]
    # Untouched keys keep their defaults.
    assert cfg.server.grace_period_seconds == Config().server.grace_period_seconds


def test_env_names_are_case_insensitive_after_the_prefix() -> None:
    assert load_config(environ={"DISPATCHER_server__Port": "9001"}).server.port == 9001


def test_unrelated_environment_variables_are_ignored() -> None:
    cfg = load_config(environ={"PATH": "/bin", "DISPATCHER_CONFIG": "", "DISPATCHERX__Y": "1",
                               "DISPATCHER_SOMETHING": "x"})
    assert cfg == Config()


@pytest.mark.parametrize(
    ("var", "section", "key"),
    [
        ("DISPATCHER_DATABASE_URL", "database", "url"),
        ("DISPATCHER_DATA_DIR", "database", "data_dir"),
        ("DISPATCHER_MASTER_KEY", "signing", "master_key"),
    ],
)
def test_short_aliases(var: str, section: str, key: str) -> None:
    # Values that would be TOML literals ("123", "true") still arrive as strings.
    for raw in ("postgresql://u@h/db?sslmode=require", "123", "true", "./var data"):
        cfg = load_config(environ={var: raw})
        assert getattr(getattr(cfg, section), key) == raw


def test_file_then_env_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, """
[server]
port = 9000
host = "10.0.0.1"
[database]
url = "postgresql://file/db"
""")
    from_file = load_config(path, environ={})
    assert (from_file.server.port, from_file.server.host) == (9000, "10.0.0.1")
    assert from_file.database.url == "postgresql://file/db"

    both = load_config(path, environ={"DISPATCHER_SERVER__PORT": "9100",
                                      "DISPATCHER_DATABASE_URL": "postgresql://env/db"})
    assert both.server.port == 9100  # env beats file
    assert both.server.host == "10.0.0.1"  # the file beats the default
    assert both.database.url == "postgresql://env/db"


def test_dispatcher_config_env_names_the_file_and_an_explicit_path_wins(tmp_path: Path) -> None:
    a = write(tmp_path, "[server]\nport = 9001\n", "a.toml")
    b = write(tmp_path, "[server]\nport = 9002\n", "b.toml")
    assert load_config(environ={"DISPATCHER_CONFIG": str(a)}).server.port == 9001
    assert load_config(b, environ={"DISPATCHER_CONFIG": str(a)}).server.port == 9002


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    err = config_error(path=tmp_path / "nope.toml", environ={})
    assert "nope.toml" in err.message
    err = config_error(path=write(tmp_path, "[server\nport = 1"), environ={})
    assert "invalid TOML" in err.message


# --- validation: each error names the dotted key ----------------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\nprot = 8080", "server.prot"),
        ("[servr]\nport = 8080", "servr"),
        ("[retry_policies.x]\nkind = 'fixed'\ndelays = [1]\nbase = 3", "retry_policies.x.base"),
    ],
)
def test_unknown_key(tmp_path: Path, toml: str, key: str) -> None:
    err = config_error(path=write(tmp_path, toml), environ={})
    assert err.field == key
    assert err.message.startswith(f"{key}: unknown key")


def test_unknown_key_from_env() -> None:
    err = config_error(environ={"DISPATCHER_DELIVERY__TIMEOUT": "5"})
    assert err.field == "delivery.timeout"
    err = config_error(environ={"DISPATCHER_NOPE__X": "5"})
    assert err.field == "nope"


@pytest.mark.parametrize(
    ("env", "key", "reason"),
    [
        ({"DISPATCHER_SERVER__PORT": "abc"}, "server.port", "expected an integer"),
        ({"DISPATCHER_SERVER__PORT": "80.5"}, "server.port", "expected an integer"),
        ({"DISPATCHER_SERVER__PORT": "true"}, "server.port", "expected an integer"),
        ({"DISPATCHER_DELIVERY__CLAIM_MAX_BYTES": "1.5"}, "delivery.claim_max_bytes",
         "expected an integer"),
        ({"DISPATCHER_DELIVERY__TIMEOUT_SECONDS": "fast"}, "delivery.timeout_seconds",
         "expected a number"),
        ({"DISPATCHER_URLS__ALLOW_HTTP": "yes"}, "urls.allow_http", "expected true or false"),
        ({"DISPATCHER_URLS__ALLOW_HTTP": "1"}, "urls.allow_http", "expected true or false"),
        ({"DISPATCHER_SERVER__HOST": "1"}, "server.host", "expected a string"),
        ({"DISPATCHER_HEALTH__WARN_PERCENTAGES": "50"}, "health.warn_percentages",
         "expected a list"),
        ({"DISPATCHER_HEALTH__WARN_PERCENTAGES": '[50, "x"]'}, "health.warn_percentages[1]",
         "expected an integer"),
        ({"DISPATCHER_LOG__FORMAT": "xml"}, "log.format", "must be one of"),
        ({"DISPATCHER_SERVER": "x"}, "server", ""),  # no "__": not an override at all
        ({"DISPATCHER_RETRY_POLICIES__X": "3"}, "retry_policies.x", "expected a table"),
    ],
)
def test_wrong_type(env: dict[str, str], key: str, reason: str) -> None:
    if "__" not in next(iter(env)):
        assert load_config(environ=env) == Config()
        return
    err = config_error(environ=env)
    assert err.field == key
    assert err.message.startswith(f"{key}: ")
    assert reason in err.message


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DISPATCHER_SERVER__PORT": "70000"}, "server.port"),
        ({"DISPATCHER_SERVER__PORT": "-1"}, "server.port"),
        ({"DISPATCHER_SERVER__GRACE_PERIOD_SECONDS": "-1"}, "server.grace_period_seconds"),
        ({"DISPATCHER_SERVER__MAX_BODY_BYTES": "0"}, "server.max_body_bytes"),
        ({"DISPATCHER_DATABASE__POOL_MIN_SIZE": "0"}, "database.pool_min_size"),
        ({"DISPATCHER_DATABASE__POOL_MAX_SIZE": "1"}, "database.pool_max_size"),
        ({"DISPATCHER_DATABASE__POOL_MIN_SIZE": "5", "DISPATCHER_DATABASE__POOL_MAX_SIZE": "3"},
         "database.pool_min_size"),
        ({"DISPATCHER_DELIVERY__TIMEOUT_SECONDS": "0"}, "delivery.timeout_seconds"),
        ({"DISPATCHER_DELIVERY__TIMEOUT_SECONDS": "31"}, "delivery.timeout_seconds"),
        ({"DISPATCHER_DELIVERY__CLAIM_BATCH_SIZE": "0"}, "delivery.claim_batch_size"),
        ({"DISPATCHER_DELIVERY__CLAIM_MAX_BYTES": "0"}, "delivery.claim_max_bytes"),
        ({"DISPATCHER_DELIVERY__CLAIM_MAX_BYTES": "-1"}, "delivery.claim_max_bytes"),
        ({"DISPATCHER_DELIVERY__LEASE_SECONDS": "1"}, "delivery.lease_seconds"),
        ({"DISPATCHER_DELIVERY__SUCCESS_STATUSES": "[200, 404]"}, "delivery.success_statuses"),
        ({"DISPATCHER_HEALTH__WARN_PERCENTAGES": "[50, 100]"}, "health.warn_percentages"),
        ({"DISPATCHER_HEALTH__WINDOW_THRESHOLD": "0"}, "health.window_threshold"),
        ({"DISPATCHER_LOG__LEVEL": "loud"}, "log.level"),
    ],
)
def test_out_of_range(env: dict[str, str], key: str) -> None:
    err = config_error(environ=env)
    assert err.field == key
    assert err.message.startswith(f"{key}: ")


def test_claim_max_bytes_is_a_positive_number_of_bytes() -> None:
    assert Config().delivery.claim_max_bytes == 64 * 1024 * 1024
    cfg = load_config(environ={"DISPATCHER_DELIVERY__CLAIM_MAX_BYTES": "1048576"})
    assert cfg.delivery.claim_max_bytes == 1048576
    for bad in ("0", "-5"):
        err = config_error(environ={"DISPATCHER_DELIVERY__CLAIM_MAX_BYTES": bad})
        assert err.field == "delivery.claim_max_bytes"
        assert err.message == f"delivery.claim_max_bytes: must be at least 1 byte (got {bad})"


def test_unknown_default_retry_policy() -> None:
    err = config_error(environ={"DISPATCHER_DELIVERY__DEFAULT_RETRY_POLICY": "sometimes"})
    assert err.field == "delivery.default_retry_policy"
    assert "sometimes" in err.message


def test_default_retry_policy_may_name_a_config_defined_policy(tmp_path: Path) -> None:
    path = write(tmp_path, """
[delivery]
default_retry_policy = "mine"
[retry_policies.mine]
kind = "fixed"
delays = [1, 2, 3]
""")
    assert load_config(path, environ={}).delivery.default_retry_policy == "mine"


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        ("kind = 'fixed'", "retry_policies.p.delays"),
        ("kind = 'fixed'\ndelays = [1, -2]", "retry_policies.p.delays"),
        ("kind = 'fixed'\ndelays = [1, 'x']", "retry_policies.p.delays[1]"),
        ("kind = 'linear'\ndelays = [1]", "retry_policies.p.kind"),
        ("kind = 'fixed'\ndelays = [1]\njitter = 1.5", "retry_policies.p.jitter"),
        ("kind = 'fixed'\ndelays = [1]\njitter = -0.1", "retry_policies.p.jitter"),
        ("kind = 'exponential'\nretries = 101", "retry_policies.p.retries"),
        ("kind = 'exponential'\nretries = -1", "retry_policies.p.retries"),
        ("kind = 'exponential'\nretries = 3\nfactor = 0.5", "retry_policies.p.factor"),
        ("kind = 'exponential'\nretries = 3\nbase_seconds = -1.0",
         "retry_policies.p.base_seconds"),
    ],
)
def test_bad_retry_policy_entries(tmp_path: Path, policy: str, key: str) -> None:
    err = config_error(path=write(tmp_path, f"[retry_policies.p]\n{policy}\n"), environ={})
    assert err.field == key
    assert key in err.message


# --- redaction ----------------------------------------------------------------------------


def test_redacted_hides_master_key_and_database_url() -> None:
    key = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="
    url = "postgresql://app:hunter2@db.internal:5432/dispatch"
    cfg = load_config(environ={"DISPATCHER_MASTER_KEY": key, "DISPATCHER_DATABASE_URL": url})
    shown = redacted(cfg)
    assert shown["signing"]["master_key"] == "***"
    assert shown["database"]["url"] == "***"
    text = repr(shown)
    assert key not in text
    assert "hunter2" not in text
    # Everything else is the effective config, and the original is untouched.
    assert shown["server"] == dataclasses.asdict(cfg.server)
    assert cfg.signing.master_key == key


def test_redacted_leaves_empty_secrets_empty() -> None:
    shown = redacted(Config())
    assert shown["signing"]["master_key"] == ""
    assert shown["database"]["url"] == ""


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]


# --- the shipped profiles -------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_file_in_config_dir_loads(path: Path) -> None:
    cfg = load_config(path, environ={})
    assert isinstance(cfg, Config)


def test_the_profiles_exist_and_say_what_they_promise() -> None:
    profiles = {p.stem: load_config(p, environ={}) for p in CONFIG_DIR.glob("*.toml")}
    assert {"default", "okx", "cobo", "cobalt", "whatsapp", "standard"} <= set(profiles)

    okx = profiles["okx"]
    assert okx.delivery.default_retry_policy == "okx"
    assert okx.delivery.success_statuses == [200]
    assert okx.urls.allow_any_port is False  # ports 80 and 443 only

    cobo = profiles["cobo"]
    assert cobo.delivery.default_retry_policy == "cobo"
    assert cobo.delivery.success_statuses == [200, 201]
    assert cobo.signing.default_scheme == "cobo"

    cobalt = profiles["cobalt"]
    assert cobalt.delivery.default_retry_policy == "exponential-3"
    assert cobalt.delivery.success_statuses == [200]
    assert cobalt.signing.default_scheme == "cobalt"

    whatsapp = profiles["whatsapp"]
    assert whatsapp.delivery.success_statuses == [200]
    from dispatcher.retry import load_policies

    policy = load_policies(whatsapp)[whatsapp.delivery.default_retry_policy]
    assert 0 < sum(policy.delays) <= 3600  # a short schedule

    standard = profiles["standard"]
    assert standard.signing.default_scheme == "standard-v1"
    assert standard.delivery.default_retry_policy == "standard"


def test_profiles_take_env_overrides_on_top(tmp_path: Path) -> None:
    cfg = load_config(CONFIG_DIR / "okx.toml", environ={"DISPATCHER_SERVER__PORT": "9999"})
    assert cfg.server.port == 9999
    assert cfg.delivery.default_retry_policy == "okx"


_SECTIONS = [(s.name, getattr(Config(), s.name)) for s in dataclasses.fields(Config)]
_FIELDS = [(name, f.name) for name, value in _SECTIONS if dataclasses.is_dataclass(value)
           for f in dataclasses.fields(value)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FIELDS),
                          st.one_of(st.text(max_size=20), st.integers(), st.floats(),
                                    st.booleans())), max_size=4))
def test_any_env_override_gives_a_config_or_an_error_naming_its_key(
    overrides: list[tuple[tuple[str, str], Any]]
) -> None:
    env = {f"DISPATCHER_{s.upper()}__{k.upper()}": str(v) for (s, k), v in overrides}
    try:
        load_config(environ=env)
    except ConfigError as exc:
        assert exc.field is not None
        assert any(exc.field.startswith(f"{s}.{k}") for (s, k), _ in overrides), exc.message


@pytest.mark.parametrize("proxy", ["http://egress.internal:3128", "https://u:p@proxy:8443",
                                   "socks5://127.0.0.1:1080", ""])
def test_proxy_url_takes_http_https_and_socks5_with_a_port(proxy: str) -> None:
    config = load_config(environ={"DISPATCHER_DELIVERY__PROXY_URL": proxy})
    assert config.delivery.proxy_url == proxy


@pytest.mark.parametrize("proxy", ["ftp://proxy:21", "http://proxy", "proxy:3128",
                                   "http://proxy:3128/path", "http://proxy:99999"])
def test_a_bad_proxy_url_names_the_key(proxy: str) -> None:
    error = config_error(environ={"DISPATCHER_DELIVERY__PROXY_URL": proxy})
    assert "delivery.proxy_url" in str(error)
