"""The agent's configuration file (TOML), validated once at start.

node_id = "sc1-node-00042"
cluster = "sc1"
broker = "kafka-1:9092,kafka-2:9092"
topic = "gpu-usage"
tick_seconds = 10          # divides 60: ticks never straddle a minute window
publish_seconds = 60       # a multiple of tick_seconds
spool_dir = "/var/lib/gpu-meter/spool"
spool_max_mb = 512
spool_alarm_fraction = 0.5
spool_fsync = "always"     # or "never" (tests on tmpfs only)
metrics_port = 9464        # 0: no metrics endpoint
metrics_host = "0.0.0.0"   # the address it listens on (default 127.0.0.1: this node only)
log_format = "json"        # or "text"

[allocation]
path = "/run/gpu-meter/allocations.json"   # or .csv; see agent/allocation.py

[collector]
kind = "nvml"              # or "simulated" (gpus, sku, seed below)
gpus = 8
sku = "H100"
seed = 7

[nvml.sku_names]           # board names NVML reports that no built-in rule knows
"NVIDIA Example GPU" = "H100"

[broker_auth]              # optional: SASL over TLS to the agents' listener (docker/)
mechanism = "SCRAM-SHA-512"                  # or SCRAM-SHA-256
username = "sc1-node-00042"                  # default: node_id (one user per node)
password_file = "/etc/gpu-meter/broker-password"   # one line, readable by its owner only
ca_file = "/etc/gpu-meter/broker-ca.pem"     # the CA that signed the brokers' certificates
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.identity import check_topic, is_valid_name
from core.units import US_PER_MINUTE, US_PER_SECOND

DEFAULT_TOPIC = "gpu-usage"  # the worker's default topic


SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True)
class BrokerAuth:
    """A node's own credentials for the brokers: SASL (SCRAM) over TLS."""

    mechanism: str
    username: str
    password: str = field(repr=False)
    ca_file: Path


@dataclass(frozen=True)
class AgentConfig:
    node_id: str
    cluster: str
    broker: str
    allocation_path: Path
    spool_dir: Path
    topic: str = DEFAULT_TOPIC
    tick_us: int = 10 * US_PER_SECOND
    publish_us: int = 60 * US_PER_SECOND
    spool_max_bytes: int = 512 * 2**20
    spool_alarm_fraction: float = 0.5
    spool_fsync: str = "always"
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    log_format: str = "json"
    collector: str = "nvml"
    simulated_gpus: int = 8
    simulated_sku: str = "H100"
    simulated_seed: int = 7
    broker_auth: BrokerAuth | None = None
    sku_names: dict[str, str] = field(default_factory=dict)


def _seconds_to_us(value: Any, name: str) -> int:
    try:
        us = Decimal(str(value)) * US_PER_SECOND
    except InvalidOperation as exc:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from exc
    if us != us.to_integral_value() or us <= 0:
        raise ConfigError(f"{name} must be a positive whole number of microseconds")
    return int(us)


def load_config(path: str | Path) -> AgentConfig:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"agent config {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent config {path}: {exc}") from exc
    return config_from_dict(doc, base=path.parent)


def config_from_dict(doc: dict[str, Any], base: Path = Path(".")) -> AgentConfig:
    known = {
        "node_id",
        "cluster",
        "broker",
        "topic",
        "tick_seconds",
        "publish_seconds",
        "spool_dir",
        "spool_max_mb",
        "spool_alarm_fraction",
        "spool_fsync",
        "metrics_port",
        "metrics_host",
        "log_format",
        "allocation",
        "collector",
        "nvml",
        "broker_auth",
    }
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"unknown agent config keys: {', '.join(unknown)}")
    for required in ("node_id", "cluster", "broker", "spool_dir"):
        if not doc.get(required):
            raise ConfigError(f"agent config: {required} is required")
    for name in ("node_id", "cluster"):
        if not is_valid_name(str(doc[name])):
            raise ConfigError(f"agent config: {name} {doc[name]!r} is not a valid name")
    allocation = doc.get("allocation", {})
    if not allocation.get("path"):
        raise ConfigError("agent config: [allocation] path is required")
    tick_us = _seconds_to_us(doc.get("tick_seconds", 10), "tick_seconds")
    publish_us = _seconds_to_us(doc.get("publish_seconds", 60), "publish_seconds")
    if US_PER_MINUTE % tick_us:
        raise ConfigError("tick_seconds must divide 60, so a tick never straddles a window")
    if publish_us % tick_us:
        raise ConfigError("publish_seconds must be a whole number of ticks")
    collector = doc.get("collector", {})
    kind = collector.get("kind", "nvml")
    if kind not in ("nvml", "simulated"):
        raise ConfigError(f"[collector] kind must be 'nvml' or 'simulated', not {kind!r}")
    log_format = doc.get("log_format", "json")
    if log_format not in ("json", "text"):
        raise ConfigError("log_format must be 'json' or 'text'")
    max_mb = doc.get("spool_max_mb", 512)
    if not isinstance(max_mb, int | float) or max_mb <= 0:
        raise ConfigError("spool_max_mb must be a positive number")
    port = doc.get("metrics_port", 0)
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ConfigError("metrics_port must be 0..65535")
    host = doc.get("metrics_host", "127.0.0.1")
    try:
        ipaddress.ip_address(host)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"metrics_host {host!r} must be an IP address to listen on, such as "
            "0.0.0.0 (every interface) or 127.0.0.1"
        ) from exc

    def resolve(p: str) -> Path:
        return (base / p).resolve() if not Path(p).is_absolute() else Path(p)

    return AgentConfig(
        node_id=str(doc["node_id"]),
        cluster=str(doc["cluster"]),
        broker=str(doc["broker"]),
        topic=check_topic(str(doc.get("topic", DEFAULT_TOPIC)), "agent config: topic"),
        allocation_path=resolve(str(allocation["path"])),
        spool_dir=resolve(str(doc["spool_dir"])),
        tick_us=tick_us,
        publish_us=publish_us,
        spool_max_bytes=int(Decimal(str(max_mb)) * 2**20),
        spool_alarm_fraction=float(doc.get("spool_alarm_fraction", 0.5)),
        spool_fsync=str(doc.get("spool_fsync", "always")),
        metrics_port=port,
        metrics_host=str(host),
        log_format=log_format,
        collector=kind,
        simulated_gpus=int(collector.get("gpus", 8)),
        simulated_sku=str(collector.get("sku", "H100")),
        simulated_seed=int(collector.get("seed", 7)),
        sku_names=dict(doc.get("nvml", {}).get("sku_names", {})),
        broker_auth=_broker_auth(doc.get("broker_auth"), str(doc["node_id"]), resolve),
    )


def _broker_auth(section: dict[str, Any] | None, node_id: str, resolve: Any) -> BrokerAuth | None:
    """[broker_auth], read once at start: the password from a file only its owner may
    read (never from the config, which is often world-readable), the CA file present."""
    if section is None:
        return None
    unknown = sorted(set(section) - {"mechanism", "username", "password_file", "ca_file"})
    if unknown:
        raise ConfigError(f"unknown [broker_auth] keys: {', '.join(unknown)}")
    mechanism = str(section.get("mechanism", SASL_MECHANISMS[0]))
    if mechanism not in SASL_MECHANISMS:
        raise ConfigError(
            f"[broker_auth] mechanism {mechanism!r} must be one of {', '.join(SASL_MECHANISMS)}"
        )
    for key in ("password_file", "ca_file"):
        if not section.get(key):
            raise ConfigError(f"[broker_auth] {key} is required")
    password_file, ca_file = resolve(section["password_file"]), resolve(section["ca_file"])
    for path in (password_file, ca_file):
        if not path.is_file():
            raise ConfigError(f"[broker_auth] {path} does not exist")
    if password_file.stat().st_mode & 0o077:
        raise ConfigError(
            f"[broker_auth] {password_file} is readable by others: chmod 600 {password_file}"
        )
    password = password_file.read_text(encoding="utf-8").strip()
    if not password:
        raise ConfigError(f"[broker_auth] {password_file} is empty")
    return BrokerAuth(mechanism, str(section.get("username", node_id)), password, ca_file)
