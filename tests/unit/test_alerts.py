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
    return subprocess.run([promtool, *args], cwd=RULES, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


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
    for module in ("streams/metrics.py", "agent/metrics.py"):
        exported |= set(re.findall(r"meter_[a-z_]+", (RULES.parents[1] / module).read_text()))
    used = set(re.findall(r"meter_[a-z_]+", rules))
    assert used <= exported, f"alerts on metrics nothing exports: {used - exported}"
