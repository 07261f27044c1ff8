"""The agent's configuration (agent/config.py), validated once at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors import GpuUnit
from agent.config import config_from_dict, load_config
from core.errors import ConfigError

T0 = 1_800_000_000_000_000
TICK = 10_000_000
UNIT = GpuUnit("GPU-0000", 0, "H100")
BASE = {
    "node_id": "n1",
    "cluster": "sc1",
    "broker": "k:9092",
    "spool_dir": "spool",
    "allocation": {"path": "a.json"},
}


def test_config_is_validated_at_the_edge(tmp_path: Path) -> None:
    base = BASE
    config = config_from_dict({**base, "tick_seconds": 0.25, "publish_seconds": 1}, tmp_path)
    assert (config.tick_us, config.publish_us) == (250_000, 1_000_000)
    assert config.spool_dir == tmp_path / "spool"
    for patch, message in [
        ({"tick_seconds": 7}, "divide 60"),
        ({"tick_seconds": 10, "publish_seconds": 25}, "whole number of ticks"),
        ({"node_id": "bad node"}, "valid name"),
        ({"collector": {"kind": "gpu-magic"}}, "kind"),
        ({"colector": {}}, "unknown agent config keys"),
        ({"tick_seconds": 0.0000001}, "microseconds"),
        ({"topic": "gpu usage"}, "'gpu usage' is not a Kafka topic name"),
        ({"metrics_host": "every interface"}, "must be an IP address to listen on"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**base, **patch}, tmp_path)


def test_the_example_config_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "agent" / "agent.example.toml")
    assert (config.collector, config.tick_us, config.spool_fsync) == ("nvml", TICK, "always")
    assert config.metrics_host == "0.0.0.0"  # scrapeable from the Prometheus host


def test_broker_credentials_come_from_a_private_file_and_make_the_producer_use_sasl_over_tls(
    tmp_path: Path,
) -> None:
    from agent.sender import producer_options

    base = {**BASE, "node_id": "sc1-node-00042", "broker": "kafka-1:19094"}
    secret, ca = tmp_path / "broker-password", tmp_path / "ca.pem"
    secret.write_text("n0de-secret\n")
    secret.chmod(0o600)
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    auth = {"password_file": "broker-password", "ca_file": "ca.pem"}
    config = config_from_dict({**base, "broker_auth": auth}, tmp_path)
    assert config.broker_auth is not None
    assert config.broker_auth.username == "sc1-node-00042"  # one user per node by default
    assert "n0de-secret" not in repr(config)
    options = producer_options(config.broker, config.broker_auth)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "sc1-node-00042",
        "n0de-secret",
    )
    assert options["ssl_cafile"] == str(ca) and options["acks"] == "all"
    assert "security_protocol" not in producer_options(config.broker)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {secret}"):
        config_from_dict({**base, "broker_auth": auth}, tmp_path)
    secret.chmod(0o600)
    for patch, message in [
        ({"mechanism": "PLAIN"}, "must be one of SCRAM-SHA-512, SCRAM-SHA-256"),
        ({"ca_file": "missing.pem"}, "does not exist"),
        ({"password": "inline"}, "unknown \\[broker_auth\\] keys: password"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**base, "broker_auth": {**auth, **patch}}, tmp_path)
