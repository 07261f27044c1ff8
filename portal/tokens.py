"""Portal tokens: random secrets handed to a tenant once, stored only as their SHA-256.

A token is ``mpt_`` and 32 random bytes in URL-safe base64. What is kept is its hash, its
kind (``tenant``: one tenant's data; ``finance``: every tenant's), the tenant, a label, when
it was issued and expires, and when it was revoked. Every request looks its hash up again,
so an expiry or a revocation counts from the next request. A token's id, shown by
``list`` and taken by ``revoke``, is the first 12 hex digits of its hash: it names the
token without being it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from core.errors import ConfigError
from core.units import US_PER_SECOND, epoch_us, utc_datetime
from portal.errors import PortalError, TokenRefused
from warehouse.client import Warehouse

PREFIX = "mpt_"
TENANT, FINANCE = "tenant", "finance"
ID_CHARS = 12
_TTL = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_S = 90 * 86400
_TOKEN = re.compile(r"^mpt_[A-Za-z0-9_-]{43}$")


def parse_ttl(text: str) -> int:
    """Seconds of a TTL such as ``12h``, ``90m``, ``7d`` (1 s to 90 days)."""
    match = _TTL.match(text.strip())
    if not match:
        raise ConfigError(f"--ttl {text!r} must be a number and a unit s, m, h or d, e.g. 12h")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if not 1 <= seconds <= MAX_TTL_S:
        raise ConfigError(f"--ttl {text!r} must be between 1s and 90d")
    return seconds


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Grant:
    """What a token allows: one tenant's data, or (finance) every tenant's."""

    kind: str
    tenant_id: str
    label: str
    expires_us: int

    def may_read(self, tenant_id: str) -> bool:
        return self.kind == FINANCE or tenant_id == self.tenant_id


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    kind: str
    tenant_id: str
    label: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def state(self, now_us: int) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if epoch_us(self.expires_at) <= now_us else "active"


def check(row: tuple | None, now_us: int) -> Grant:
    """The grant of a ``portal_token_state`` row (kind, tenant, label, expires, revoked),
    or TokenRefused; the reason is kept for the log, never shown to the caller."""
    if row is None:
        raise TokenRefused("unknown token")
    kind, tenant_id, label, expires_at, revoked_at_s = row
    if revoked_at_s:
        raise TokenRefused("revoked token")
    expires_us = epoch_us(expires_at)
    if expires_us <= now_us:
        raise TokenRefused("expired token")
    if kind not in (TENANT, FINANCE) or (kind == TENANT and not tenant_id):
        raise TokenRefused("malformed token record")
    return Grant(kind, tenant_id, label, expires_us)


class TokenBook:
    """Tokens in ClickHouse: issue, revoke and list (a writer's connection), and look one
    up (the portal's read-only connection)."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def lookup(self, token: str, now_us: int) -> Grant:
        if not _TOKEN.match(token):
            raise TokenRefused("not a portal token")
        rows = self.warehouse.execute(
            "SELECT kind, tenant_id, label, expires_at, revoked_at_s FROM portal_token_state "
            "WHERE token_sha256 = %(h)s",
            {"h": token_sha256(token)},
        )
        return check(rows[0] if rows else None, now_us)

    def issue(self, kind: str, tenant_id: str, ttl_s: int, label: str, now_us: int) -> str:
        if kind == TENANT:
            known = self.warehouse.execute(
                "SELECT count() FROM tenants_current WHERE tenant_id = %(t)s", {"t": tenant_id}
            )[0][0]
            if not known:
                raise PortalError(
                    f"tenant {tenant_id!r} is not in tenants_current: load its contract first "
                    "(meter contracts load FILE), or check the spelling (meter portal token "
                    "list shows the tenants with tokens)"
                )
        token = mint()
        issued_s = now_us // US_PER_SECOND
        self.warehouse.execute(
            "INSERT INTO portal_tokens (token_sha256, kind, tenant_id, label, issued_at, "
            "expires_at, revoked_at, version) VALUES",
            [
                (
                    token_sha256(token),
                    kind,
                    tenant_id if kind == TENANT else "",
                    label,
                    utc_datetime(now_us),
                    utc_datetime((issued_s + ttl_s) * US_PER_SECOND),
                    utc_datetime(0),
                    1,
                )
            ],
        )
        return token

    def _rows(self, where: str = "", params: dict | None = None) -> list[tuple]:
        return self.warehouse.execute(
            "SELECT token_sha256, kind, tenant_id, label, issued_at, expires_at, revoked_at_s "
            f"FROM portal_token_state {where} ORDER BY issued_at, token_sha256",
            params or {},
        )

    def list(self, tenant_id: str | None = None) -> list[TokenRow]:
        rows = (
            self._rows("WHERE tenant_id = %(t)s", {"t": tenant_id}) if tenant_id else self._rows()
        )
        return [
            TokenRow(
                h[:ID_CHARS],
                kind,
                tid,
                label,
                issued,
                expires,
                utc_datetime(revoked * US_PER_SECOND) if revoked else None,
            )
            for h, kind, tid, label, issued, expires, revoked in rows
        ]

    def revoke(self, token_id: str, now_us: int) -> TokenRow:
        """Revoke the one token whose hash starts with ``token_id`` (or the token itself)."""
        prefix = token_sha256(token_id)[:ID_CHARS] if token_id.startswith(PREFIX) else token_id
        if not re.fullmatch(r"[0-9a-f]{12,64}", prefix):
            raise ConfigError(
                f"token id {token_id!r} must be the 12 hex digits `meter portal token list` "
                "shows (or the token itself)"
            )
        rows = self._rows("WHERE startsWith(token_sha256, %(p)s)", {"p": prefix})
        if len(rows) != 1:
            what = "no token" if not rows else f"{len(rows)} tokens"
            raise PortalError(
                f"{what} with id {token_id!r}: `meter portal token list` shows the ids"
            )
        h, kind, tid, label, issued, expires, _revoked = rows[0]
        self.warehouse.execute(
            "INSERT INTO portal_tokens (token_sha256, kind, tenant_id, label, issued_at, "
            "expires_at, revoked_at, version) VALUES",
            [(h, kind, tid, label, issued, expires, utc_datetime(now_us), now_us)],
        )
        return TokenRow(h[:ID_CHARS], kind, tid, label, issued, expires, utc_datetime(now_us))
