"""The dead-letter record for a rejected message: the original bytes, reason in headers.

The value is the message exactly as received (so it can be re-driven after a fix) and the
headers carry the machine-readable reason and where the message came from, in the manner
of Kafka Connect's ``__connect.errors.*`` headers.
"""

from __future__ import annotations

from streams.processor import Rejection

HEADER_PREFIX = "meter.error."


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    source = rejection.message
    fields = {
        "reason": rejection.reason,
        "detail": rejection.detail[:1000],
        "topic": source.topic,
        "partition": str(source.partition),
        "offset": str(source.offset),
    }
    if rejection.node_id:
        fields.update(node_id=rejection.node_id, boot_id=rejection.boot_id, seq=str(rejection.seq))
    return [(HEADER_PREFIX + name, value.encode("utf-8")) for name, value in fields.items()]


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The ``meter.error.*`` headers of a dead-letter record as a plain dict."""
    return {
        name[len(HEADER_PREFIX) :]: value.decode("utf-8")
        for name, value in headers or []
        if name.startswith(HEADER_PREFIX)
    }
