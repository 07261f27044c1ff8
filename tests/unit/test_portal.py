"""The portal's pure logic: tokens, the month-end projection, the API's numbers, alert
thresholds, event ids and signatures. No server: portal/app.py over real ClickHouse is
tested in tests/e2e/test_portal.py."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.errors import ConfigError
from core.units import US_PER_GPU_HOUR, US_PER_SECOND
from portal import alerts, model
from portal.errors import AlertError, TokenRefused
from portal.tokens import FINANCE, TENANT, check, mint, parse_ttl, token_sha256

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
NOW_US = int(NOW.timestamp()) * US_PER_SECOND
LATER = datetime(2026, 12, 4, 13, tzinfo=UTC)


def test_a_ttl_is_a_number_and_a_unit_within_ninety_days():
    assert parse_ttl("12h") == 12 * 3600
    assert parse_ttl("90d") == 90 * 86400
    for bad in ("12", "h", "0s", "91d", "1.5h", "-1h", "12 hours"):
        with pytest.raises(ConfigError):
            parse_ttl(bad)


def test_a_token_is_random_and_only_its_hash_is_kept():
    a, b = mint(), mint()
    assert a != b and a.startswith("mpt_") and len(a) == 47
    assert token_sha256(a) != token_sha256(b) and a not in token_sha256(a)


def test_a_token_is_refused_once_expired_or_revoked():
    grant = check((TENANT, "aurora-labs", "x", LATER, 0), NOW_US)
    assert grant.may_read("aurora-labs") and not grant.may_read("borealis-ai")
    assert check((FINANCE, "", "", LATER, 0), NOW_US).may_read("anyone")
    with pytest.raises(TokenRefused, match="expired"):
        check((TENANT, "aurora-labs", "x", NOW, 0), NOW_US)  # expiry is exclusive
    with pytest.raises(TokenRefused, match="revoked"):
        check((TENANT, "aurora-labs", "x", LATER, NOW_US // US_PER_SECOND), NOW_US)
    with pytest.raises(TokenRefused, match="unknown"):
        check(None, NOW_US)
    with pytest.raises(TokenRefused, match="malformed"):
        check((TENANT, "", "x", LATER, 0), NOW_US)  # a tenant token names its tenant


def test_the_projection_is_a_straight_line_over_the_term_inside_the_month():
    day = 86_400 * US_PER_SECOND
    start, end = 0, 30 * day
    assert model.project(10 * US_PER_GPU_HOUR, start, end, 10 * day) == 30 * US_PER_GPU_HOUR
    assert model.project(7, start, end, 3 * day) == 70  # rounded down: 7 × 30 / 3
    assert model.project(7, start, end, 0) == 7  # nothing elapsed: no line to draw
    assert model.project(7, start, end, 40 * day) == 7  # a closed month is what it used
    assert model.project(1, start, end, 7 * day) == 4  # 30 / 7 = 4.28…: rounded down


def test_gpu_hours_are_truncated_to_nine_places_as_the_views_give_them():
    assert model.hours_text(0) == "0.000000000"
    assert model.hours_text(1) == "0.000000000"
    assert model.hours_text(US_PER_GPU_HOUR * 2 // 3) == "0.666666666"
    assert model.hours_text(2**63 - 1) == "2562047788.015215501"


def _hook(**kwargs) -> alerts.Hook:
    base = {"usage_fractions": "0.8,1", "unhealthy_share": "0.02", "gap_minutes": 30}
    return alerts.parse_hook(
        "aurora-labs", "https://hooks.example/a", "s" * 32, **{**base, **kwargs}
    )


def test_a_hook_is_refused_in_one_line_when_any_part_is_wrong():
    for url in ("ftp://x/a", "hooks.example/a", "https://"):
        with pytest.raises(AlertError, match="--url"):
            alerts.parse_hook("t", url, "s" * 32, "0.8")
    with pytest.raises(AlertError, match="secret"):
        alerts.parse_hook("t", "https://h/a", "short", "0.8")
    for fractions in ("0", "eighty", "0.1234567", "11"):
        with pytest.raises(AlertError, match="--usage-fractions"):
            alerts.parse_hook("t", "https://h/a", "s" * 32, fractions)
    with pytest.raises(AlertError, match="at least one"):
        alerts.parse_hook("t", "https://h/a", "s" * 32)
    assert _hook().usage_fractions == (Decimal("0.8"), Decimal("1"))


def test_a_usage_threshold_is_reached_exactly_at_its_fraction():
    hook = _hook()
    committed = 1_000_000_000_000_000_001  # past 2^53: a float would not tell these apart
    just_under = committed * 8 // 10  # 0.8 × committed is not whole: this is below it
    assert [
        e.threshold for e in alerts.usage_events(hook, "2026-12", [("C", committed, just_under)])
    ] == []
    at = (committed * 8 + 9) // 10
    assert [e.threshold for e in alerts.usage_events(hook, "2026-12", [("C", committed, at)])] == [
        "0.8"
    ]
    both = alerts.usage_events(hook, "2026-12", [("C", committed, committed)])
    assert [e.threshold for e in both] == ["0.8", "1"]
    assert alerts.usage_events(hook, "2026-12", [("C", 0, 5)]) == []  # no commitment


def test_an_event_has_one_id_per_month_threshold_and_contract_however_often_found():
    hook = _hook()
    first = alerts.usage_events(hook, "2026-12", [("C", 100, 100)])
    again = alerts.usage_events(hook, "2026-12", [("C", 100, 180)])  # more usage, later
    assert [e.event_id for e in first] == [e.event_id for e in again]
    next_month = alerts.usage_events(hook, "2027-01", [("C", 100, 100)])
    other = alerts.usage_events(hook, "2026-12", [("D", 100, 100)])
    ids = {e.event_id for e in first + next_month + other}
    assert len(ids) == 6


def test_the_unhealthy_share_fires_once_it_is_passed():
    hook = _hook()
    assert alerts.unhealthy_events(hook, "2026-12", 100, 2) == []  # at the share: not past
    [event] = alerts.unhealthy_events(hook, "2026-12", 100, 3)
    assert event.kind == alerts.UNHEALTHY and event.body["unhealthy_us"] == "3"
    assert alerts.unhealthy_events(hook, "2026-12", 0, 0) == []


def test_a_gap_fires_after_its_minutes_once_per_node_boot_and_seq():
    hook = _hook(gap_minutes=30)
    gap = {
        "node_id": "n1",
        "boot_id": "b1",
        "first_missing_seq": 7,
        "last_missing_seq": 9,
        "first_seen_us": NOW_US,
    }
    assert alerts.gap_events(hook, [gap], NOW_US + 30 * 60 * US_PER_SECOND) == []
    [event] = alerts.gap_events(hook, [gap], NOW_US + 31 * 60 * US_PER_SECOND)
    [same] = alerts.gap_events(hook, [gap], NOW_US + 99 * 60 * US_PER_SECOND)
    assert event.event_id == same.event_id


def test_a_signature_verifies_only_with_the_secret_the_body_and_a_recent_time():
    body = b'{"a":1}'
    header = alerts.sign("k" * 32, 1_000, body)
    assert alerts.verify("k" * 32, header, body, 1_100)
    assert not alerts.verify("x" * 32, header, body, 1_100)
    assert not alerts.verify("k" * 32, header, b'{"a":2}', 1_100)
    assert not alerts.verify("k" * 32, header, body, 1_000 + alerts.TOLERANCE_S + 1)
    assert not alerts.verify("k" * 32, "garbage", body, 1_000)
