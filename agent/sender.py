"""Sends the spool to Kafka in seq order and removes what the broker acknowledged.

Runs in its own thread, so sampling and spooling never wait on the network. Records go
out with ``acks=all`` and one request in flight, keyed by node (one partition per node,
in order). A report leaves the spool only after its send future succeeded; on any error
the sender backs off (1 s doubling to 30 s) and resends from the oldest unacknowledged
report, so an outage of any length ends with the backlog delivered in order. A resend
after an ambiguous failure (the broker wrote it but the acknowledgement was lost) puts
the same bytes on the topic twice; the pipeline counts a (node, boot, seq) once.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from agent.config import BrokerAuth
from agent.metrics import AgentMetrics
from agent.spool import Spool, SpoolEntry

log = logging.getLogger("meter.agent.sender")

CHUNK_BYTES = 512 * 1024


def producer_options(bootstrap: str, auth: BrokerAuth | None = None) -> dict[str, Any]:
    """The sender's producer settings; with ``auth``, SASL over TLS as the node's user."""
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        acks="all",
        max_in_flight_requests_per_connection=1,
        retries=5,
        # A chunk is appended in a tight loop: a short linger puts it in one record batch,
        # which the broker takes or refuses whole.
        linger_ms=20,
        batch_size=CHUNK_BYTES * 2,
        max_request_size=CHUNK_BYTES * 4,
        # While a connected producer has lost the broker, kafka-python retries in a loop
        # until the delivery timeout: 10 s (not 30) hands it to the sender's backoff sooner,
        # halving what an outage costs the node (agent/README.md). A report a minute is
        # far inside 5 s on a healthy broker; a resend after a timeout is a duplicate,
        # which the pipeline counts once.
        request_timeout_ms=5_000,
        delivery_timeout_ms=10_000,
        max_block_ms=5_000,
        reconnect_backoff_ms=200,
        reconnect_backoff_max_ms=2_000,
    )
    if auth is not None:
        options |= dict(
            security_protocol="SASL_SSL",
            sasl_mechanism=auth.mechanism,
            sasl_plain_username=auth.username,
            sasl_plain_password=auth.password,
            ssl_cafile=str(auth.ca_file),
        )
    return options


def kafka_producer(bootstrap: str, auth: BrokerAuth | None = None) -> KafkaProducer:
    return KafkaProducer(**producer_options(bootstrap, auth))


MAX_BACKOFF_S = 30.0
PROBE_TIMEOUT_S = 2.0  # per bootstrap address, at start: the stop bound must still hold


def broker_unreachable(bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why no bootstrap address accepts a connection, or None if one does. A start-up
    check only: the agent runs either way, spooling until the broker answers."""
    reasons = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return None
        except (OSError, ValueError) as exc:
            reasons.append(f"{address.strip()}: {exc}")
    return "; ".join(reasons)


class SpoolSender(threading.Thread):
    def __init__(
        self,
        spool: Spool,
        topic: str,
        key: bytes,
        metrics: AgentMetrics,
        producer_factory: Callable[[], Any],
        on_death: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__(name="spool-sender", daemon=True)
        # An error the loop does not expect ends the thread, and through this the agent:
        # ticking on without a sender would spool for ever and send nothing.
        self.on_death = on_death
        self.failure: BaseException | None = None
        self.spool = spool
        self.topic = topic
        self.key = key
        self.metrics = metrics
        self.producer_factory = producer_factory
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._producer: Any = None
        self._backoff_s = 0.0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                sent = self.send_once()
                if self._backoff_s:
                    self.stopping.wait(self._backoff_s)
                elif not sent:
                    self.wake.wait(1.0)
                    self.wake.clear()
        except BaseException as exc:
            self.failure = exc
            log.critical(
                "the sender failed; the agent stops (its spool is kept and sent after a restart)",
                exc_info=True,
            )
            if self.on_death is not None:
                self.on_death(exc)
        finally:
            self.close(timeout_s=0 if self.failure else 5)

    def send_once(self) -> int:
        """Send one chunk of the spool and wait for it; returns how many were acknowledged."""
        entries = self.spool.pending(max_bytes=CHUNK_BYTES)
        self.metrics.set_spool(len(self.spool), self.spool.bytes_used, self.spool.alarm)
        if not entries:
            return 0
        acked = 0
        try:
            if self._producer is None:
                self._producer = self.producer_factory()
            started = time.monotonic()
            futures = [(e, self._send(e)) for e in entries]
            for entry, future in futures:
                future.get(timeout=40)
                self.spool.remove(entry.seq)
                acked += 1
            self.metrics.sent(acked, time.monotonic() - started)
            if self._backoff_s:
                backlog = {"acked": acked, "backlog": len(self.spool)}
                log.warning(
                    "the broker answers again; sending the spool", extra={"fields": backlog}
                )
            self._backoff_s = 0.0
        except (KafkaError, OSError) as exc:
            self.metrics.send_failed()
            # Whatever the producer still queues would reach the broker after the failed
            # report and break seq order: drop it with the producer and resend from the spool.
            self.close(timeout_s=0)
            # Capped exponential with jitter: 25,000 agents that lost the broker together
            # do not all come back in the same second.
            base_s = min(MAX_BACKOFF_S, max(1.0, self._backoff_s * 2))
            self._backoff_s = base_s * random.uniform(0.8, 1.2)
            log.warning(
                "send failed; will resend from the oldest unacknowledged report",
                extra={
                    "fields": {
                        "error": repr(exc),
                        "acked": acked,
                        "backlog": len(self.spool),
                        "retry_in_s": self._backoff_s,
                    }
                },
            )
        self.metrics.set_spool(len(self.spool), self.spool.bytes_used, self.spool.alarm)
        return acked

    @property
    def failing(self) -> bool:
        """The last send failed (the broker did not answer)."""
        return self._backoff_s > 0

    def _send(self, entry: SpoolEntry) -> Any:
        return self._producer.send(self.topic, key=self.key, value=entry.read())

    def drain(self, timeout_s: float) -> bool:
        """Send until the spool is empty or ``timeout_s`` passed; True if empty."""
        deadline = time.monotonic() + timeout_s
        while len(self.spool) and time.monotonic() < deadline:
            if not self.send_once():
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return not len(self.spool)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def close(self, timeout_s: float = 5) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                self._producer.close(timeout=timeout_s)
            self._producer = None
