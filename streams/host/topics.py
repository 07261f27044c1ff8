"""Creating the pipeline's topics up front, so partition counts and size limits are ours."""

from __future__ import annotations

import contextlib

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from core.errors import MeterError
from streams.host.settings import DLQ_HEADROOM_BYTES, MAX_MESSAGE_BYTES

# Kafka's per-topic limit on a record batch; its default (about 1 MB) is below what agents
# and dead letters send (streams/host/settings.py). The local broker stores it and has no limit.
TOPIC_CONFIGS = {"max.message.bytes": str(MAX_MESSAGE_BYTES + DLQ_HEADROOM_BYTES)}


def ensure_topics(
    bootstrap: str, topics: dict[str, int], timeout_s: float = 30.0, replication: int = 1
) -> dict[str, int]:
    """Create each ``name: partitions`` that does not exist yet, with ``replication``
    copies; returns every topic's partition count as the broker reports it (an existing
    topic keeps its own). A broker that cannot be reached within ``timeout_s``, or that
    refuses the topics (fewer brokers than copies), is a :class:`MeterError` naming it."""
    try:
        return _ensure(bootstrap, topics, timeout_s, replication)
    except KafkaError as exc:
        raise MeterError(
            f"cannot create topics on the Kafka broker at {bootstrap}: {exc}; check "
            "--bootstrap (METER_BOOTSTRAP), that the broker is up, and that it has at least "
            f"--replication-factor ({replication}) brokers"
        ) from exc


def new_topics(topics: dict[str, int], existing: set[str], replication: int) -> list[NewTopic]:
    """The topics of ``topics`` not in ``existing``. With copies on several brokers a write
    acknowledged by all in-sync replicas (the agents' acks=all) must be on all but one of
    them, so losing a broker loses nothing acknowledged."""
    configs = dict(TOPIC_CONFIGS)
    if replication > 1:
        configs["min.insync.replicas"] = str(replication - 1)
    return [
        NewTopic(name, partitions, replication_factor=replication, topic_configs=configs)
        for name, partitions in topics.items()
        if name not in existing
    ]


def _ensure(
    bootstrap: str, topics: dict[str, int], timeout_s: float, replication: int
) -> dict[str, int]:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=10_000,
        bootstrap_timeout_ms=round(timeout_s * 1000),
    )
    try:
        missing = new_topics(topics, set(admin.list_topics()), replication)
        if missing:
            # A worker declaring the same topic concurrently may win the race.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
        described = admin.describe_topics(list(topics))
        return {t["name"]: len(t["partitions"]) for t in described}
    finally:
        admin.close()
