"""The dead-letter record for a rejected message: the original bytes, reason in headers.

The value is the message exactly as received (so it can be re-driven after a fix) and the
headers carry the machine-readable reason, where the message came from, its size and its
SHA-256, in the manner of Kafka Connect's ``__connect.errors.*`` headers.

A message larger than the pipeline's limit (:data:`streams.host.settings.MAX_MESSAGE_BYTES`,
which a broker without a limit of its own can exceed), or one the broker refuses as too
large for the dead-letter topic, is dead-lettered as a *stub*: the same headers, with
``payload = truncated``, and only its first :data:`STUB_BYTES` as the value. The whole
payload is still in ``rejected_reports.payload``, found by source topic, partition and
offset, and checked by ``payload_sha256``. A poison message of any size is therefore
accounted for and never stops the partition.
"""

from __future__ import annotations

import hashlib

from streams.contract import Rejection
from streams.host.settings import MAX_MESSAGE_BYTES

HEADER_PREFIX = "meter.error."
# What a stub keeps of an oversized payload: enough to see what it was.
STUB_BYTES = 64 * 1024


def dead_letter_headers(rejection: Rejection, whole: bool = True) -> list[tuple[str, bytes]]:
    source = rejection.message
    fields = {
        "reason": rejection.reason,
        "detail": rejection.detail[:1000],
        "topic": source.topic,
        "partition": str(source.partition),
        "offset": str(source.offset),
        "payload_size": str(len(source.value)),
        "payload_sha256": hashlib.sha256(source.value).hexdigest(),
        "payload": "whole" if whole else "truncated",
    }
    if rejection.node_id:
        fields.update(node_id=rejection.node_id, boot_id=rejection.boot_id, seq=str(rejection.seq))
    return [(HEADER_PREFIX + name, value.encode("utf-8")) for name, value in fields.items()]


def dead_letter_record(
    rejection: Rejection, whole: bool | None = None
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) of the dead letter; ``whole`` None: whole if within the limit."""
    value = rejection.message.value
    if whole is None:
        whole = len(value) <= MAX_MESSAGE_BYTES
    return (value if whole else value[:STUB_BYTES]), dead_letter_headers(rejection, whole)


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The ``meter.error.*`` headers of a dead-letter record as a plain dict."""
    return {
        name[len(HEADER_PREFIX) :]: value.decode("utf-8")
        for name, value in headers or []
        if name.startswith(HEADER_PREFIX)
    }
