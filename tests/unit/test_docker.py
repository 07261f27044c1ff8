"""docker/ without a Docker engine: the compose file describes the production shape the
README promises (three KRaft brokers with replication 3 and min.insync.replicas 2, three
Keepers, two ClickHouse replicas, workers failing over between them), every long-running
service restarts, reports its health and has limits, every piece of state has a volume,
the configs parse with the real programs where one is here, and the finance user can read
the documented views and nothing else (docker/README.md lists what no test here runs)."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from portal.reads import VIEWS as PORTAL_VIEWS
from warehouse.client import ClickHouseSettings
from warehouse.migrate import view_names

DOCKER = Path(__file__).parents[2] / "docker"
ONE_SHOT = {"migrate", "finance-grants"}
STATELESS = {"portal"}  # it only reads ClickHouse


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def test_three_kraft_brokers_keep_every_topic_through_the_loss_of_one(compose):
    services = compose["services"]
    brokers = {name: _env(s) for name, s in services.items() if name.startswith("kafka-")}
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    assert sorted(env["KAFKA_NODE_ID"] for env in brokers.values()) == ["1", "2", "3"]
    for name, env in brokers.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert voters == [f"{i}@kafka-{i}:9093" for i in (1, 2, 3)]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        # Agents reach their own listener, authenticated and encrypted, from outside.
        assert "AGENTS:SASL_SSL" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
        assert "AGENTS://${METER_PUBLIC_HOST" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert any(p.endswith(":9094") for p in services[name]["ports"])


def test_workers_fail_over_between_both_replicas_on_keeper(compose):
    services = compose["services"]
    worker = _env(services["worker"])
    # As compose interpolates it: the password from docker/.env.
    url = re.sub(r"\$\{[^}]*\}", "secret", worker["METER_CLICKHOUSE_URL"])
    settings = ClickHouseSettings.from_url(url)
    hosts = [e.host for e in settings.endpoints]
    assert hosts == ["clickhouse-1", "clickhouse-2"] and settings.cluster == "meter"
    assert worker["METER_REPLICATION_FACTOR"] == "3"
    assert worker["METER_BOOTSTRAP"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert worker["METER_METRICS_HOST"] == "0.0.0.0" and worker["METER_METRICS_PORT"] == "9108"
    replicas = sorted(_env(services[h])["REPLICA"] for h in hosts)
    assert replicas == ["r1", "r2"]
    keepers = sorted(_env(s)["KEEPER_SERVER_ID"] for n, s in services.items() if "keeper" in n)
    assert keepers == ["1", "2", "3"]


def test_every_service_restarts_reports_its_health_has_limits_and_keeps_state_in_volumes(
    compose,
):
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service["restart"] == "on-failure", name
            continue
        assert service["restart"] == "unless-stopped", name
        # The worker's healthcheck is the image's (docker/Dockerfile HEALTHCHECK).
        assert "healthcheck" in service or name == "worker", name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+g", limits["memory"]), name
        named = {v.split(":")[0] for v in service.get("volumes", []) if not v.startswith(".")}
        assert (named or name in STATELESS) and named <= declared, name
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "\nUSER meter\n" in dockerfile


def test_the_clickhouse_and_keeper_configs_name_the_same_cluster(compose):
    cluster = ET.parse(DOCKER / "clickhouse" / "cluster.xml").getroot()
    hosts = [r.findtext("host") for r in cluster.iter("replica") if r.findtext("host")]
    assert hosts == ["clickhouse-1", "clickhouse-2"]
    keepers = [n.findtext("host") for n in cluster.find("zookeeper").iter("node")]
    keeper = ET.parse(DOCKER / "clickhouse" / "keeper.xml").getroot()
    raft = [s.findtext("hostname") for s in keeper.iter("server")]
    assert keepers == raft == ["keeper-1", "keeper-2", "keeper-3"]
    assert cluster.find("macros/replica").get("from_env") == "REPLICA"
    assert keeper.find("keeper_server/server_id").get("from_env") == "KEEPER_SERVER_ID"
    assert {n for n in compose["services"] if n.startswith("keeper-")} == set(keepers)


def test_prometheus_config_and_its_rules_pass_promtool():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus (make test does it)"
    done = subprocess.run(
        [promtool, "check", "config", str(DOCKER / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_finance_may_select_the_documented_views_and_the_ledger_table_only():
    sql = (DOCKER / "clickhouse" / "finance.sql").read_text()
    granted = re.findall(
        r"GRANT ON CLUSTER meter SELECT ON gpu_meter\.(\w+) TO finance_reader", sql
    )
    definer = re.findall(r"ALTER TABLE gpu_meter\.(\w+) ON CLUSTER meter MODIFY SQL SECURITY", sql)
    assert sorted(granted) == sorted([*view_names(), "usage_ledger_holdings"])
    assert sorted(definer) == sorted(view_names())
    portal = re.findall(r"GRANT ON CLUSTER meter SELECT ON gpu_meter\.(\w+) TO portal_reader", sql)
    assert sorted(portal) == sorted(PORTAL_VIEWS)
    assert set(PORTAL_VIEWS) <= {*view_names(), "usage_ledger_holdings"}
    statements = "\n".join(x for x in sql.splitlines() if not x.startswith("--"))
    assert "gpu_meter.*" not in statements and "INSERT" not in statements.upper()
