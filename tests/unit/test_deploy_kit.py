"""The deployment kit in deploy/ checked as far as this machine can: the compose file
parses and names only what our Dockerfile, CLI and config have; the systemd unit
passes `systemd-analyze verify` (when installed); nginx forwards what the daemon needs."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from dispatcher.cli import main
from dispatcher.config import ServerConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SAMPLE = {"POSTGRES_PASSWORD": "pw",
          "DISPATCHER_MASTER_KEY": base64.b64encode(b"k" * 32).decode()}


def _compose() -> dict[str, Any]:
    text = (DEPLOY / "compose.yaml").read_text()
    # ${NAME:?message} and ${NAME}: what docker compose substitutes from the environment.
    text = re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: SAMPLE[m.group(1)], text)
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _dispatcher_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _compose()["services"].items()
            if svc.get("image") == "dispatcher:local"}


def test_the_compose_file_has_postgres_an_api_and_a_worker_built_from_our_dockerfile() -> None:
    services = _dispatcher_services()
    assert {"migrate", "api", "worker"} <= services.keys()
    for svc in services.values():
        build = svc["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert services["api"]["command"][-2:] == ["--role", "api"]
    assert services["worker"]["command"][-2:] == ["--role", "worker"]
    assert "postgres" in _compose()["services"]


def test_every_command_and_option_in_the_compose_file_exists() -> None:
    for name, svc in _dispatcher_services().items():
        program, command, *args = svc["command"]
        assert program == "dispatcher", name
        sub = main.commands.get(command)
        assert isinstance(sub, click.Command), (name, command)
        known = {opt for p in sub.params for opt in getattr(p, "opts", [])}
        for arg in args:
            if arg.startswith("--"):
                assert arg in known, (name, arg)


def test_every_dispatcher_variable_in_the_compose_file_is_a_valid_setting() -> None:
    for name, svc in _dispatcher_services().items():
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert all(k.startswith("DISPATCHER_") for k in env), name
        config = load_config(environ=env)  # unknown keys and bad values raise
        assert config.database.url.startswith("postgresql://dispatcher:pw@postgres:5432/")
        if name == "api":
            assert config.server.trusted_proxies == ["172.16.0.0/12"]


def test_the_ports_and_files_the_kit_refers_to_exist() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 8080" in dockerfile
    nginx = (DEPLOY / "nginx" / "dispatcher.conf").read_text()
    assert "server api:8080;" in nginx
    assert "proxy_set_header Upgrade $http_upgrade;" in nginx  # dispatcher listen
    size = re.search(r"client_max_body_size (\d+)m;", nginx)
    assert size and int(size.group(1)) * 1024 * 1024 >= ServerConfig().max_body_bytes
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["dns_sd_configs"][0]["port"] == 8080
    for svc in _compose()["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "dispatcher.service").read_text()
    here = Path(sys.executable).parent / "dispatcher"  # the path installed as documented
    unit = unit.replace("/opt/dispatcher/bin/dispatcher", str(here))
    (tmp_path / "dispatcher.service").write_text(unit)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "dispatcher.service")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- dashboards and alert rules -------------------------------------------------------

METRIC = re.compile(r"\bdispatcher_[a-z_]+\b")
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created")}


def _exported() -> set[str]:
    """Every sample name the daemon's registry can expose."""
    from dispatcher.metrics import REGISTRY

    return {family.name + suffix for family in REGISTRY.collect()
            for suffix in SUFFIXES[family.type]}


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dispatcher.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_metric_in_the_dashboard_and_the_rules_is_one_the_daemon_exports() -> None:
    exported = _exported()
    named = {name for expr in [*_dashboard_exprs(), *(r["expr"] for r in _rules())]
             for name in METRIC.findall(expr)}
    assert named, "no metric found: the pattern is wrong"
    assert named - exported == set()
    assert "dispatcher_queue_depth" in exported and "dispatcher_attempts_total" in exported


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    exprs = " ".join(_dashboard_exprs())
    for metric in ("dispatcher_attempts_total", "dispatcher_attempt_duration_seconds_bucket",
                   "dispatcher_queue_depth", "dispatcher_oldest_due_age_seconds",
                   "dispatcher_deliveries_held", "dispatcher_endpoints",
                   "dispatcher_endpoints_throttled", "dispatcher_outcomes_unwritten",
                   "dispatcher_tenant_attempts_total"):
        assert re.search(rf"\b{metric}\b", exprs), metric
    assert "histogram_quantile(0.99" in exprs


def test_the_alert_rules_cover_the_failures_that_page_someone() -> None:
    names = {r["alert"] for r in _rules()}
    assert {"DispatcherOutcomeWriterStalled", "DispatcherQueueAgeRising",
            "DispatcherManyEndpointsPaused", "DispatcherNotReady",
            "DispatcherClientCertificateExpiring"} <= names
    for rule in _rules():
        assert rule["annotations"]["summary"], rule["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="no promtool (Debian package prometheus)")
def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
