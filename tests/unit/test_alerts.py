"""The Prometheus alerting rules shipped in docker/prometheus, checked and unit-tested by
promtool (Debian's prometheus package; `make test` installs it): each alert fires on the
series that should raise it and stays quiet on the near misses beside them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

RULES = Path(__file__).parents[2] / "docker" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus (make test does it)"
    return subprocess.run([promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120)


def test_the_alerting_rules_are_valid_and_their_unit_tests_pass():
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_and_names_only_metrics_the_code_exports():
    rules = (RULES / "alerts.yml").read_text()
    tests = (RULES / "alerts.test.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert len(alerts) >= 8
    assert all(f"alertname: {a}" in tests for a in alerts), "an alert without a test"
    exported = set()
    for module in ("streams/host/metrics.py", "agent/metrics.py"):
        exported |= set(re.findall(r"meter_[a-z_]+", (RULES.parents[1] / module).read_text()))
    used = set(re.findall(r"meter_[a-z_]+", rules))
    assert used <= exported, f"alerts on metrics nothing exports: {used - exported}"


def test_the_grafana_dashboard_is_valid_and_queries_only_exported_metrics(tmp_path):
    """docker/grafana/gpu-meter.json: a Grafana dashboard (schema fields, unique panel ids,
    a Prometheus target each) whose every query parses (promtool, as recording rules) and
    names only metrics the worker or the agent exports."""
    import json

    dashboard = json.loads((RULES.parent / "grafana" / "gpu-meter.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len(panels) >= 10 and len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) == len(panels)
    exported = set()
    for module in ("streams/host/metrics.py", "agent/metrics.py"):
        exported |= set(re.findall(r"meter_[a-z_]+", (RULES.parents[1] / module).read_text()))
    used = {m for e in exprs for m in re.findall(r"meter_[a-z_]+", e)}
    assert used <= exported, f"panels on metrics nothing exports: {used - exported}"
    assert {"meter_partition_lag", "meter_seq_gaps_open", "meter_agent_spool_reports"} <= used
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus (make test does it)"
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
