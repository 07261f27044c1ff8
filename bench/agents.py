"""Reference Faust agents for ``meter bench e2e``: the floors and the baseline.

- ``noop``: counts messages and does nothing else: what Faust itself can move.
- ``plain``: per message, fastavro decode and Python dict aggregation per sample: the
  plain per-message agent the hot path is compared with.

Run as ``python -m bench.agents noop|plain BOOTSTRAP TOPIC GROUP``.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import faust

from schemas import ReportCodec
from streams.processing.aggregate import add_into, sample_pieces


def create_bench_app(kind: str, bootstrap: str, topic: str, group: str) -> faust.App:
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.5,
        broker_commit_interval=1.0,
        datadir=f"/tmp/meter-bench-{group}",
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    codec = ReportCodec()
    sums: dict = defaultdict(list)

    if kind == "noop":

        @app.agent(source, name="count_messages")
        async def count_messages(stream: faust.StreamT) -> None:
            async for _ in stream.take_events(2_000, within=0.5):
                pass

    else:

        @app.agent(source, name="aggregate_per_message")
        async def aggregate_per_message(stream: faust.StreamT) -> None:
            async for value in stream:
                report = codec.decode(value)
                for sample in report["samples"]:
                    for key, parts in sample_pieces(report["cluster"], sample, 60_000_000):
                        add_into(sums, key, parts)

    return app


if __name__ == "__main__":
    kind, bootstrap, topic, group = sys.argv[1:5]
    faust.Worker(
        create_bench_app(kind, bootstrap, topic, group), loglevel="warning"
    ).execute_from_commandline()
