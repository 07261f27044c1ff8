"""``meter portal alerts``: hooks kept in ClickHouse, events found from the portal's own
reads, and deliveries with retries, each attempt recorded (``alert_delivery_log``).

A run evaluates every enabled hook for the current month, records the events not seen
before (their ids are derived from what happened: portal/alerts.py), then sends every
event that has no successful delivery yet: up to ``attempts`` tries with exponential
backoff, each signed afresh and recorded. An event still undelivered is tried again on
the next run. A 2xx answer is a delivery; anything else, or no answer in 10 s, is a
failure. At least once: a crash after the receiver answered but before the delivery was
recorded sends it again, under the same event id.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from billing.rating import Period
from core.units import US_PER_SECOND, utc_datetime
from portal.alerts import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Event,
    Hook,
    gap_events,
    sign,
    unhealthy_events,
    usage_events,
)
from portal.reads import Reader
from warehouse.client import Warehouse

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer
    error: str = ""

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    request = urllib.request.Request(url, body, {**headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return Answer(response.status)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        return Answer(0, str(getattr(exc, "reason", exc))[:300])


class AlertBook:
    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def set_hook(self, hook: Hook, now_us: int) -> None:
        self.warehouse.execute(
            "INSERT INTO alert_hooks (tenant_id, url, secret, usage_fractions, unhealthy_share,"
            " gap_minutes, enabled, set_at, version) VALUES",
            [
                (
                    hook.tenant_id,
                    hook.url,
                    hook.secret,
                    [str(f) for f in hook.usage_fractions],
                    "" if hook.unhealthy_share is None else str(hook.unhealthy_share),
                    hook.gap_minutes or 0,
                    int(hook.enabled),
                    utc_datetime(now_us),
                    now_us,
                )
            ],
        )

    def hooks(self) -> list[Hook]:
        rows = self.warehouse.execute(
            "SELECT tenant_id, argMax(url, version), argMax(secret, version), "
            "argMax(usage_fractions, version), argMax(unhealthy_share, version), "
            "argMax(gap_minutes, version), argMax(enabled, version) FROM alert_hooks "
            "GROUP BY tenant_id ORDER BY tenant_id"
        )
        return [
            Hook(
                t,
                url,
                secret,
                tuple(Decimal(f) for f in fractions),
                Decimal(share) if share else None,
                gap or None,
                bool(enabled),
            )
            for t, url, secret, fractions, share, gap, enabled in rows
        ]

    def known(self, tenant_id: str) -> set[str]:
        rows = self.warehouse.execute(
            "SELECT DISTINCT event_id FROM alert_events WHERE tenant_id = %(t)s", {"t": tenant_id}
        )
        return {r[0] for r in rows}

    def record(self, events: list[Event], now_us: int) -> None:
        if events:
            self.warehouse.execute(
                "INSERT INTO alert_events (event_id, tenant_id, kind, month, threshold, body, "
                "created_at) VALUES",
                [
                    (
                        e.event_id,
                        e.tenant_id,
                        e.kind,
                        e.month,
                        e.threshold,
                        e.payload().decode(),
                        utc_datetime(now_us),
                    )
                    for e in events
                ],
            )

    def undelivered(self, tenant_id: str) -> list[tuple[Event, int]]:
        """Events of the tenant with no successful delivery, and the attempts made so far."""
        rows = self.warehouse.execute(
            "SELECT e.event_id, any(e.kind), any(e.month), any(e.threshold), any(e.body), "
            "min(e.created_at) FROM alert_events AS e WHERE e.tenant_id = %(t)s "
            "AND e.event_id NOT IN (SELECT event_id FROM alert_deliveries "
            "WHERE tenant_id = %(t)s AND delivered = 1) GROUP BY e.event_id "
            "ORDER BY min(e.created_at), e.event_id",
            {"t": tenant_id},
        )
        attempts = dict(
            self.warehouse.execute(
                "SELECT event_id, max(attempt) FROM alert_deliveries WHERE tenant_id = %(t)s "
                "GROUP BY event_id",
                {"t": tenant_id},
            )
        )
        out = []
        for eid, kind, month, threshold, body, _created in rows:
            doc = json.loads(body)
            doc.pop("event_id", None)
            doc.pop("type", None)
            out.append(
                (Event(eid, tenant_id, kind, month, threshold, doc), int(attempts.get(eid, 0)))
            )
        return out

    def attempt(self, event: Event, attempt: int, answer: Answer, now_us: int) -> None:
        self.warehouse.execute(
            "INSERT INTO alert_deliveries (event_id, tenant_id, attempt, attempted_at, "
            "status_code, delivered, error) VALUES",
            [
                (
                    event.event_id,
                    event.tenant_id,
                    attempt,
                    utc_datetime(now_us),
                    answer.status,
                    int(answer.delivered),
                    answer.error,
                )
            ],
        )


def evaluate(reader: Reader, hook: Hook, period: Period, now_us: int) -> list[Event]:
    """Every event the hook's thresholds give for ``period`` as the portal reads it now."""
    positions = reader.positions(hook.tenant_id, period)
    events = usage_events(
        hook,
        period.label,
        [(p["contract_id"], p["committed_gpu_us"], p["used_gpu_us"]) for p in positions],
    )
    billable = reader.billable(hook.tenant_id, period)
    events += unhealthy_events(
        hook,
        period.label,
        sum(r["measured_us"] for r in billable),
        sum(r["credited_unhealthy_us"] for r in billable),
    )
    if hook.gap_minutes is not None:
        events += gap_events(hook, reader.gaps(hook.tenant_id, period.start_us), now_us)
    return events


def deliver(
    book: AlertBook,
    hook: Hook,
    event: Event,
    done: int,
    attempts: int,
    clock_us: Callable[[], int],
    sleep: Callable[[float], object],
    send: Callable[[str, bytes, dict[str, str]], Answer] = post,
    first_delay_s: float = 0.5,
) -> bool:
    body = event.payload()
    delay = first_delay_s
    for n in range(done + 1, done + attempts + 1):
        now_us = clock_us()
        headers = {
            EVENT_HEADER: event.event_id,
            SIGNATURE_HEADER: sign(hook.secret, now_us // US_PER_SECOND, body),
        }
        answer = send(hook.url, body, headers)
        book.attempt(event, n, answer, now_us)
        if answer.delivered:
            return True
        log.warning(
            "alert %s to %s: attempt %d failed: %s",
            event.event_id,
            hook.url,
            n,
            answer.error or answer.status,
        )
        if n < done + attempts:
            sleep(delay)
            delay = min(delay * 2, 30.0)
    return False


def run_once(
    warehouse: Warehouse,
    clock_us: Callable[[], int],
    sleep: Callable[[float], object],
    attempts: int = 5,
    send: Callable[[str, bytes, dict[str, str]], Answer] = post,
    first_delay_s: float = 0.5,
    period: Period | None = None,
) -> dict[str, int]:
    """One evaluation and delivery round over every hook, for ``period`` (default: the
    clock's month)."""
    book, reader = AlertBook(warehouse), Reader(warehouse)
    now_us = clock_us()
    period = period or Period.parse(utc_datetime(now_us).strftime("%Y-%m"))
    counts = {"new_events": 0, "delivered": 0, "undelivered": 0}
    for hook in book.hooks():
        if not hook.enabled:
            continue
        known = book.known(hook.tenant_id)
        new = [e for e in evaluate(reader, hook, period, now_us) if e.event_id not in known]
        new = list({e.event_id: e for e in new}.values())
        book.record(new, now_us)
        counts["new_events"] += len(new)
        for event, done in book.undelivered(hook.tenant_id):
            ok = deliver(book, hook, event, done, attempts, clock_us, sleep, send, first_delay_s)
            counts["delivered" if ok else "undelivered"] += 1
    return counts
