"""``meter portal …``: serve the portal, issue and revoke its tokens, draw drafts, and run
alerts. Registered by meter/cli.py, which validates the shared ClickHouse flags."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.units import epoch_us, utc_datetime

Flag = Callable[..., None]


def add_parser(sub: Any, flag: Flag, warehouse_flags: Callable[..., None]) -> None:
    portal = sub.add_parser("portal", help="the tenant portal: serve, tokens, drafts, alerts")
    psub = portal.add_subparsers(dest="portal_command", required=True)

    serve = psub.add_parser(
        "serve", help="serve the portal and its JSON API (as a read-only ClickHouse user)"
    )
    flag(serve, "--host", "PORTAL_HOST", default="127.0.0.1", help="address to listen on")
    flag(serve, "--port", "PORTAL_PORT", default="8080", type=int, help="port to listen on")
    flag(
        serve,
        "--connections",
        "PORTAL_CONNECTIONS",
        default="4",
        type=int,
        help="ClickHouse connections (requests served at once)",
    )
    warehouse_flags(serve)

    token = psub.add_parser("token", help="issue, revoke and list portal tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    issue = tsub.add_parser("issue", help="a new token; prints the URL that carries it")
    issue.add_argument("--tenant", help="the tenant the token may read")
    issue.add_argument("--finance", action="store_true", help="a token for every tenant")
    issue.add_argument("--ttl", default="12h", help="lifetime: 90m, 12h, 7d (at most 90d)")
    issue.add_argument("--label", default="", help="who or what it is for (shown by list)")
    flag(
        issue,
        "--public-url",
        "PORTAL_PUBLIC_URL",
        default="http://127.0.0.1:8080",
        help="the portal's address as the tenant reaches it",
    )
    warehouse_flags(issue)
    revoke = tsub.add_parser("revoke", help="revoke a token now (its id from list)")
    revoke.add_argument("token_id", help="the 12-digit id `list` shows, or the token")
    warehouse_flags(revoke)
    listing = tsub.add_parser("list", help="tokens and their state (never the tokens)")
    listing.add_argument("--tenant", help="only this tenant's")
    warehouse_flags(listing)

    drafts = psub.add_parser("drafts", help="draw the open month's DRAFT statements for it")
    drafts.add_argument("--period", help="month YYYY-MM (default: the current one)")
    flag(drafts, "--issuer", "ISSUER_FILE", type=Path, help="the provider's identity (JSON)")
    warehouse_flags(drafts)

    alerts = psub.add_parser("alerts", help="alert webhooks: set, run, log")
    asub = alerts.add_subparsers(dest="alerts_command", required=True)
    aset = asub.add_parser("set", help="set a tenant's webhook and thresholds")
    aset.add_argument("--tenant", required=True)
    aset.add_argument("--url", required=True, help="where events are POSTed")
    aset.add_argument(
        "--secret-file",
        required=True,
        type=Path,
        help="file holding the signing secret (never on the command line)",
    )
    aset.add_argument("--usage-fractions", default="", help="of the commitment, e.g. 0.8,1")
    aset.add_argument("--unhealthy-share", default="", help="of allocated time, e.g. 0.02")
    aset.add_argument("--gap-minutes", type=int, help="alert on a gap open longer than this")
    warehouse_flags(aset)
    adisable = asub.add_parser("disable", help="stop a tenant's alerts (set enables again)")
    adisable.add_argument("--tenant", required=True)
    warehouse_flags(adisable)
    arun = asub.add_parser("run", help="evaluate every hook and deliver what is due")
    arun.add_argument("--once", action="store_true", help="one round, then exit")
    arun.add_argument("--interval-s", type=float, default=60.0, help="between rounds")
    arun.add_argument("--attempts", type=int, default=5, help="tries per event per round")
    arun.add_argument("--period", help="month YYYY-MM (default: the current one)")
    warehouse_flags(arun)
    alog = asub.add_parser("log", help="events and their deliveries")
    alog.add_argument("--tenant")
    warehouse_flags(alog)


def _now_us() -> int:
    return epoch_us(datetime.now(UTC))


def _portal_settings(args: argparse.Namespace, settings_of: Callable[..., Any]) -> Any:
    """The portal reads as a read-only user: by default, the local stack's finance user."""
    if args.clickhouse_url:
        return settings_of(args)
    from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER

    return replace(settings_of(args), user=FINANCE_USER, password=FINANCE_PASSWORD)


def run(args: argparse.Namespace, settings_of: Callable[..., Any]) -> int:
    from warehouse.client import Warehouse

    command = args.portal_command
    if command == "serve":
        from portal.serve import serve

        return serve(_portal_settings(args, settings_of), args.host, args.port, args.connections)
    warehouse = Warehouse(settings_of(args))
    if command == "token":
        return _token(args, warehouse)
    if command == "drafts":
        return _drafts(args, warehouse)
    return _alerts(args, warehouse)


def _token(args: argparse.Namespace, warehouse: Any) -> int:
    from portal.tokens import FINANCE, TENANT, TokenBook, parse_ttl

    book = TokenBook(warehouse)
    if args.token_command == "issue":
        if bool(args.tenant) == bool(args.finance):
            raise ConfigError("token issue needs --tenant T, or --finance for every tenant")
        ttl_s = parse_ttl(args.ttl)
        if not args.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"--public-url {args.public_url!r} must start with http(s)://")
        kind = FINANCE if args.finance else TENANT
        now_us = _now_us()
        token = book.issue(kind, args.tenant or "", ttl_s, args.label, now_us)
        expires = utc_datetime(now_us + ttl_s * 1_000_000)
        print(f"{args.public_url.rstrip('/')}/login?token={token}")
        print(
            f"{'finance' if args.finance else 'tenant ' + args.tenant}; expires "
            f"{expires:%Y-%m-%d %H:%M:%S} UTC; shown once, stored only as its hash",
            file=sys.stderr,
        )
        return 0
    if args.token_command == "revoke":
        row = book.revoke(args.token_id, _now_us())
        print(f"revoked {row.token_id} ({row.kind} {row.tenant_id or 'all tenants'})")
        return 0
    now_us = _now_us()
    print(f"{'id':<13} {'state':<8} {'kind':<8} {'tenant':<18} {'expires (UTC)':<20} label")
    for t in book.list(args.tenant):
        print(
            f"{t.token_id:<13} {t.state(now_us):<8} {t.kind:<8} {t.tenant_id or '*':<18} "
            f"{t.expires_at:%Y-%m-%d %H:%M:%S} {t.label}"
        )
    return 0


def _drafts(args: argparse.Namespace, warehouse: Any) -> int:
    from billing.commands import issuer_of
    from portal.drafts import draw

    issuer = issuer_of(args.issuer)
    period = args.period or datetime.now(UTC).strftime("%Y-%m")
    from billing.rating import Period

    Period.parse(period)
    outcomes = draw(warehouse, period, issuer, lambda: datetime.now(UTC))
    print(f"DRAFT statements of {period} for the portal: not issued, no digest")
    for tid, total, why in outcomes:
        print(f"{tid:<18} {'no draft: ' + why if why else 'DRAFT total ' + total}")
    return 0


def _alerts(args: argparse.Namespace, warehouse: Any) -> int:
    from portal.alerts import parse_hook
    from portal.webhooks import AlertBook, run_once

    book = AlertBook(warehouse)
    if args.alerts_command == "set":
        known = warehouse.execute(
            "SELECT count() FROM tenants_current WHERE tenant_id = %(t)s", {"t": args.tenant}
        )[0][0]
        if not known:
            raise ConfigError(f"tenant {args.tenant!r} is not in tenants_current")
        secret = args.secret_file.read_text().strip()
        hook = parse_hook(
            args.tenant,
            args.url,
            secret,
            args.usage_fractions,
            args.unhealthy_share,
            args.gap_minutes,
        )
        book.set_hook(hook, _now_us())
        print(f"alerts for {hook.tenant_id}: {hook.url}")
        return 0
    if args.alerts_command == "disable":
        hook = next((h for h in book.hooks() if h.tenant_id == args.tenant), None)
        if hook is None:
            raise ConfigError(f"tenant {args.tenant!r} has no alert hook (meter portal alerts set)")
        book.set_hook(replace(hook, enabled=False), _now_us())
        print(f"alerts for {args.tenant} disabled")
        return 0
    if args.alerts_command == "run":
        from billing.rating import Period

        period = Period.parse(args.period) if args.period else None
        if not 1 <= args.attempts <= 20:
            raise ConfigError(f"--attempts {args.attempts} must be 1..20")
        while True:
            counts = run_once(warehouse, _now_us, time.sleep, args.attempts, period=period)
            print(
                f"alerts: {counts['new_events']} new, {counts['delivered']} delivered, "
                f"{counts['undelivered']} still undelivered",
                flush=True,
            )
            if args.once:
                return 0 if not counts["undelivered"] else 1
            time.sleep(args.interval_s)
    where = "WHERE tenant_id = %(t)s " if args.tenant else ""
    rows = warehouse.execute(
        "SELECT tenant_id, event_id, kind, month, threshold, attempts, delivered, last_status,"
        f" last_error FROM alert_delivery_log {where}ORDER BY created_at, event_id",
        {"t": args.tenant},
    )
    for r in rows:
        print("\t".join(str(v) for v in r))
    return 0
