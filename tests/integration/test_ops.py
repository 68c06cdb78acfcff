"""ops/: the Grafana dashboard and Prometheus alerts, checked against a real Prometheus scraping the
real daemon (every metric they name is exported; every query parses and evaluates; every rule is healthy)
and with `promtool test rules` (each alert fires on sample series)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.devstack import REPO, AsteriskInstance, free_port
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

OPS = REPO / "ops"
DASHBOARD = OPS / "grafana" / "callctl-dashboard.json"
ALERTS = OPS / "prometheus" / "callctl-alerts.yml"
# scripts/system-deps.sh unpacks Debian's prometheus package there (no service installed)
PROM_BIN = Path(os.environ.get("CALLCTL_PROMETHEUS_DIR", "/var/cache/callctl/prometheus")) / "usr" / "bin"
METRIC = re.compile(r"\b(callctl_[a-z0-9_]+)\b")


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def as_instant(expr: str) -> str:
    """Grafana's variables as a plain Prometheus query would have them."""
    return (expr.replace('instance=~"$instance"', 'instance=~".*"').replace("$__rate_interval", "30s")
            .replace("$__range", "5m"))


def test_promtool_checks_the_rules_and_each_alert_fires_on_sample_series() -> None:
    promtool = str(PROM_BIN / "promtool")
    assert Path(promtool).exists(), f"{promtool} missing: `make deps` (scripts/system-deps.sh) unpacks it"
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in check.stdout
    tests = subprocess.run([promtool, "test", "rules", "callctl-alerts.test.yml"], cwd=ALERTS.parent,
                           capture_output=True, text=True, check=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    tested = set(re.findall(r"alertname: (\w+)", (ALERTS.parent / "callctl-alerts.test.yml").read_text()))
    assert tested == {r["alert"] for r in alert_rules()}  # every alert has a firing test


def test_the_dashboard_and_alerts_name_only_metrics_the_daemon_exports(
        daemon_factory: Any, asterisk: AsteriskInstance, tmp_path: Path) -> None:
    d = daemon_factory()
    d.wait_until_ready()
    sipp.call(asterisk.sip_port, "+33900000001", [("wait_bye", None)])  # one call: outcome and CDR series
    d.wait_for_log("call_finished")
    status, body = d.get("/metrics")
    assert status == 200
    exported = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")}
    named = {m for _, expr in dashboard_queries() for m in METRIC.findall(expr)}
    named |= {m for r in alert_rules() for m in METRIC.findall(r["expr"])}
    assert named, "no callctl metric found in ops/"
    assert named <= exported, f"named in ops/ but not exported: {sorted(named - exported)}"

    # A real Prometheus scrapes the daemon and evaluates the alert rules: every dashboard query must
    # parse and return series, every rule must be healthy.
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "callctl", "static_configs": [{"targets": [d.http]}]}],
    }))
    prom_log = (tmp_path / "prometheus.log").open("w")
    prom = subprocess.Popen([str(PROM_BIN / "prometheus"), f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=prom_log)
    try:
        def query(expr: str) -> dict[str, Any]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    out: dict[str, Any] = json.loads(resp.read())
                    return out
            except urllib.error.HTTPError as exc:
                return dict(json.loads(exc.read()))
            except OSError:
                return {"status": "unreachable"}

        # a rate needs two samples: wait for three scrapes
        wait_for(lambda: (r := query('count_over_time(up{job="callctl"}[1m])'))["status"] == "success"
                 and r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 3,
                 30, "three scrapes of the daemon by Prometheus", interval_s=0.5)
        for title, expr in dashboard_queries():
            result = query(as_instant(expr))
            assert result["status"] == "success", f"panel '{title}': {expr}: {result.get('error')}"
            if "EMERGENCY_REFUSED" not in expr and "outcome=\"error\"" not in expr:
                assert result["data"]["result"], f"panel '{title}' shows nothing: {expr}"

        def rules_evaluated() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as resp:
                groups = json.loads(resp.read())["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else []

        rules = wait_for(rules_evaluated, 30, "every alert rule evaluated once", interval_s=0.5)
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        firing = {r["name"] for r in rules if r["state"] != "inactive"}
        assert firing == set(), f"a healthy daemon raised {firing}"
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        prom_log.close()
