"""Messages that must be rejected, each with the reason the pipeline must give."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from core import reasons
from core.units import US_PER_SECOND
from schemas import ReportCodec, load_released_versions
from tests.factories import TICK_US, make_report, make_sample


def malformed_messages(count: int, seed: int = 0) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, value, expected reason) for ``count`` messages of varied kinds.

    Decodable bad reports come from nodes of their own with consecutive seqs, so they
    are neither duplicates nor gaps: each must be rejected for its own fault.
    """
    rng = random.Random(seed)
    codec = ReportCodec()
    header = load_released_versions()[-1].header
    next_seq: dict[str, int] = {}
    future_us = (int(time.time()) + 86_400) * US_PER_SECOND
    future_us -= future_us % TICK_US

    def report_kind(kind: str) -> tuple[bytes, bytes, str]:
        node = f"sc1-node-fuzz{rng.randrange(8)}"
        seq = next_seq.get(node, 0)
        next_seq[node] = seq + 1
        sample, reason = make_sample(), kind
        if kind == reasons.NEGATIVE_COUNTER:
            sample[rng.choice(["allocated_us", "busy_us", "energy_mj"])] = -rng.randrange(1, 10**9)
        elif kind == reasons.COUNTER_EXCEEDS_TICK:
            sample["allocated_us"] = TICK_US + rng.randrange(1, 10**6)
        elif kind == reasons.UNKNOWN_SKU:
            sample["sku"] = rng.choice(["V100X", "h100", "", "TPUv9"])
        elif kind == reasons.INVALID_TENANT:
            sample["tenant_id"] = rng.choice(["", "Tenant With Spaces", "x" * 65, "évil"])
        elif kind == reasons.COUNTER_OUT_OF_RANGE:
            sample["energy_mj"] = 2**62
        report = make_report([sample], seq=seq, node_id=node)
        if kind == reasons.END_BEFORE_START:
            report["interval_end_us"] = report["interval_start_us"] - rng.randrange(0, 10**6)
        elif kind == reasons.FUTURE_TIMESTAMP:
            report = make_report([make_sample(future_us)], seq=seq, node_id=node)
        elif kind == reasons.TICK_OUTSIDE_INTERVAL:
            report["interval_start_us"] += 1
        elif kind == reasons.DUPLICATE_SAMPLE:
            report = make_report([make_sample(), make_sample()], seq=seq, node_id=node)
        return node.encode(), codec.encode(report), reason

    def framing_kind(kind: str) -> tuple[bytes, bytes, str]:
        good = codec.encode(make_report(seq=rng.randrange(10**6)))
        if kind == reasons.BAD_MAGIC:
            value = bytes([rng.randrange(0, 0xC3)]) + rng.randbytes(rng.randrange(0, 300))
        elif kind == reasons.UNKNOWN_SCHEMA:
            value = b"\xc3\x01" + rng.randbytes(8) + rng.randbytes(rng.randrange(0, 100))
        elif kind == reasons.UNDECODABLE:
            value = good[: rng.randrange(len(header) + 1, len(good) - 1)]
        elif kind == reasons.TRAILING_BYTES:
            value = good + rng.randbytes(rng.randrange(1, 20))
        else:
            value = b""
        return b"fuzz", value, kind

    report_kinds = [
        reasons.NEGATIVE_COUNTER,
        reasons.COUNTER_EXCEEDS_TICK,
        reasons.UNKNOWN_SKU,
        reasons.INVALID_TENANT,
        reasons.COUNTER_OUT_OF_RANGE,
        reasons.END_BEFORE_START,
        reasons.FUTURE_TIMESTAMP,
        reasons.TICK_OUTSIDE_INTERVAL,
        reasons.DUPLICATE_SAMPLE,
    ]
    framing_kinds = [
        reasons.BAD_MAGIC,
        reasons.UNKNOWN_SCHEMA,
        reasons.UNDECODABLE,
        reasons.TRAILING_BYTES,
        reasons.EMPTY_MESSAGE,
    ]
    for i in range(count):
        kinds = report_kinds + framing_kinds
        kind = kinds[i % len(kinds)]
        yield report_kind(kind) if kind in report_kinds else framing_kind(kind)
