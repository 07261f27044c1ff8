"""Alert rules, events and signatures: pure logic, no I/O (portal/webhooks.py sends).

Finance sets, per tenant, a webhook (URL and secret) and its thresholds: fractions of the
month's commitment (``0.8,1``), an unhealthy share of allocated time (``0.02``), and how
many minutes a node serving the tenant may have an open seq gap. An event's id is derived
from what happened, never from when it was noticed: a threshold of a contract crossed in
a month is one event however often it is evaluated, and a gap is one event per node, boot
and first missing seq. So each is delivered under one id, at least once, and a receiver
that keeps the ids it has seen acts on each once.

A request is signed like Stripe's: header ``X-Meter-Signature: t=<unix s>,v1=<hex>``, the
HMAC-SHA256 with the secret of ``<t>.<body>``; ``X-Meter-Event-Id`` carries the id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any
from urllib.parse import urlparse

from portal.errors import AlertError

USAGE, UNHEALTHY, GAP = "usage_commitment", "unhealthy_share", "open_gap"
SIGNATURE_HEADER, EVENT_HEADER = "X-Meter-Signature", "X-Meter-Event-Id"
TOLERANCE_S = 300
MIN_SECRET_CHARS = 24


@dataclass(frozen=True)
class Hook:
    tenant_id: str
    url: str
    secret: str = field(repr=False)
    usage_fractions: tuple[Decimal, ...] = ()
    unhealthy_share: Decimal | None = None
    gap_minutes: int | None = None
    enabled: bool = True


def _fraction(text: str, what: str, most: Decimal) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise AlertError(f"{what} {text!r} is not a number (write 0.8 for 80 %)") from None
    if not value.is_finite() or not Decimal(0) < value <= most or value.as_tuple().exponent < -6:
        raise AlertError(f"{what} {text!r} must be above 0, at most {most}, ≤ 6 decimal places")
    return value


def parse_hook(
    tenant_id: str,
    url: str,
    secret: str,
    usage_fractions: str = "",
    unhealthy_share: str = "",
    gap_minutes: int | None = None,
) -> Hook:
    """A hook from what finance typed, refused in one line if any part is wrong."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise AlertError(f"--url {url!r} must be an http:// or https:// URL with a host")
    if len(secret) < MIN_SECRET_CHARS:
        raise AlertError(
            f"the secret must be at least {MIN_SECRET_CHARS} characters (openssl rand -hex 32)"
        )
    fractions = tuple(
        sorted(
            {
                _fraction(f, "--usage-fractions", Decimal(10))
                for f in usage_fractions.split(",")
                if f.strip()
            }
        )
    )
    share = _fraction(unhealthy_share, "--unhealthy-share", Decimal(1)) if unhealthy_share else None
    if gap_minutes is not None and not 1 <= gap_minutes <= 7 * 24 * 60:
        raise AlertError(f"--gap-minutes {gap_minutes} must be 1..10080")
    if not fractions and share is None and gap_minutes is None:
        raise AlertError(
            "a hook needs at least one of --usage-fractions, --unhealthy-share, --gap-minutes"
        )
    return Hook(tenant_id, url, secret, fractions, share, gap_minutes)


@dataclass(frozen=True)
class Event:
    event_id: str
    tenant_id: str
    kind: str
    month: str
    threshold: str
    body: dict[str, Any]

    def payload(self) -> bytes:
        return json.dumps(
            {"event_id": self.event_id, "type": self.kind, **self.body},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


def event_id(*parts: str) -> str:
    return "evt_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def usage_events(hook: Hook, month: str, contracts: list[tuple[str, int, int]]) -> list[Event]:
    """Each (contract, fraction) whose threshold month-to-date usage has reached:
    ``contracts`` is (contract_id, committed_gpu_us, used_gpu_us) of ``month``."""
    events = []
    for contract_id, committed_us, used_us in contracts:
        for fraction in hook.usage_fractions:
            with localcontext() as ctx:
                ctx.prec = 80
                reached = committed_us > 0 and Decimal(used_us) >= fraction * committed_us
            if not reached:
                continue
            events.append(
                Event(
                    event_id(hook.tenant_id, USAGE, month, contract_id, str(fraction)),
                    hook.tenant_id,
                    USAGE,
                    month,
                    str(fraction),
                    {
                        "tenant_id": hook.tenant_id,
                        "month": month,
                        "contract_id": contract_id,
                        "threshold_fraction": str(fraction),
                        "committed_gpu_us": str(committed_us),
                        "used_gpu_us": str(used_us),
                    },
                )
            )
    return events


def unhealthy_events(hook: Hook, month: str, allocated_us: int, unhealthy_us: int) -> list[Event]:
    """Once per month, when unhealthy time passes the share of allocated time."""
    share = hook.unhealthy_share
    if share is None or allocated_us <= 0:
        return []
    with localcontext() as ctx:
        ctx.prec = 80
        if Decimal(unhealthy_us) <= share * allocated_us:
            return []
    return [
        Event(
            event_id(hook.tenant_id, UNHEALTHY, month, str(share)),
            hook.tenant_id,
            UNHEALTHY,
            month,
            str(share),
            {
                "tenant_id": hook.tenant_id,
                "month": month,
                "threshold_share": str(share),
                "allocated_us": str(allocated_us),
                "unhealthy_us": str(unhealthy_us),
            },
        )
    ]


def gap_events(hook: Hook, gaps: list[dict[str, Any]], now_us: int) -> list[Event]:
    """A gap open longer than the hook's minutes: one event per node, boot and first
    missing seq (``gaps`` as portal.reads.Reader.gaps gives them)."""
    if hook.gap_minutes is None:
        return []
    limit_us = hook.gap_minutes * 60_000_000
    events = []
    for g in gaps:
        if now_us - g["first_seen_us"] <= limit_us:
            continue
        first = str(g["first_missing_seq"])
        events.append(
            Event(
                event_id(hook.tenant_id, GAP, g["node_id"], g["boot_id"], first),
                hook.tenant_id,
                GAP,
                "",
                str(hook.gap_minutes),
                {
                    "tenant_id": hook.tenant_id,
                    "node_id": g["node_id"],
                    "boot_id": g["boot_id"],
                    "first_missing_seq": first,
                    "last_missing_seq": str(g["last_missing_seq"]),
                    "open_for_s": (now_us - g["first_seen_us"]) // 1_000_000,
                    "threshold_minutes": hook.gap_minutes,
                },
            )
        )
    return events


def sign(secret: str, timestamp_s: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return f"t={timestamp_s},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, now_s: int, tolerance_s: int = TOLERANCE_S
) -> bool:
    """What a receiver does: the signature matches and is recent (no replay of old ones)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp_s = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = sign(secret, timestamp_s, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
