"""The portal's web application: the JSON API (described by OpenAPI at /openapi.json) and
the pages a tenant opens, over the same reads.

Every request is authenticated from its token (``Authorization: Bearer …`` or the cookie
``/login`` sets) against ``portal_token_state``, so an expiry or a revocation counts from
the next request. A tenant token reaches one tenant: any other tenant id in a path is
refused with 403 and the same body whether or not that tenant exists. A finance token
reaches every tenant, and an unknown tenant is 404 for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from billing.errors import BillingError
from billing.rating import Period
from billing.render import render_csv, render_html
from billing.statement import json_file_bytes
from core.units import US_PER_SECOND, utc_datetime
from portal import model, pages, schema
from portal.errors import TokenRefused
from portal.reads import Reader
from portal.tokens import FINANCE, Grant

log = logging.getLogger(__name__)
COOKIE = "meter_portal_token"
TENANT_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MONTH = r"^2[0-9]{3}-(0[1-9]|1[0-2])$"
_REFUSED = "a valid portal token is needed: ask your account team for a new link"
_FORBIDDEN = "this token does not give access to that tenant"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": schema.Problem, "description": "no token, or expired or revoked"},
    403: {"model": schema.Problem, "description": "the token is for another tenant"},
    404: {"model": schema.Problem, "description": "no such tenant or statement"},
    422: {"model": schema.Problem, "description": "a malformed tenant id, month or kind"},
}
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _grant(request: Request) -> Grant:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    token = token or request.cookies.get(COOKIE, "")
    if not token:
        raise HTTPException(401, _REFUSED)
    state = request.app.state
    try:
        return state.grant_of(token, state.now_us())
    except TokenRefused as exc:
        log.info("token refused: %s", exc)
        raise HTTPException(401, _REFUSED) from None


Auth = Annotated[Grant, Depends(_grant)]
TenantPath = Annotated[str, Path(pattern=TENANT_ID, max_length=64)]
MonthQuery = Annotated[str | None, Query(pattern=MONTH, description="YYYY-MM; default: now")]


def build_app(
    readers: Callable[[], Any],
    grant_of: Callable[[str, int], Grant],
    now_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    fan_out_threads: int = 4,
) -> FastAPI:
    """``readers()``: a context manager lending a :class:`Reader`; ``grant_of(token,
    now_us)``: the token's grant or TokenRefused."""
    app = FastAPI(
        title="GPU meter tenant portal",
        version="1",
        description="Live usage, commitment position, drafts, issued statements and "
        "completeness, per tenant. Counters are decimal strings of integers (µs, mJ); "
        "GPU-hours are µs / 3.6e9 truncated to 9 places, as the warehouse views give them.",
    )

    fan_out = ThreadPoolExecutor(max_workers=fan_out_threads, thread_name_prefix="page")
    app.state.grant_of = grant_of
    app.state.now_us = now_us

    def tenant_of(auth: Grant, tenant_id: str, r: Reader) -> str:
        if not auth.may_read(tenant_id):
            raise HTTPException(403, _FORBIDDEN)
        name = r.tenant_name(tenant_id)
        if name is None:
            raise HTTPException(404, f"no tenant {tenant_id!r}")
        return name

    def period_of(month: str | None) -> Period:
        label = month or utc_datetime(now_us()).strftime("%Y-%m")
        try:
            return Period.parse(label)
        except BillingError as exc:  # the pattern lets only real months through
            raise HTTPException(422, str(exc)) from None

    def usage(r: Reader, tenant_id: str, period: Period, fresh_row: Any = None) -> dict[str, Any]:
        fresh = model.freshness_doc(fresh_row or r.freshness(), now_us())
        return model.usage_doc(
            tenant_id,
            period,
            r.usage_by_day(tenant_id, period),
            r.billable(tenant_id, period),
            fresh,
        )

    def position(
        r: Reader, tenant_id: str, period: Period, fresh_row: Any = None
    ) -> dict[str, Any]:
        fresh_row = fresh_row or r.freshness()
        through = fresh_row.through_us if fresh_row.partitions else period.start_us
        return model.position_doc(
            tenant_id,
            period,
            r.positions(tenant_id, period),
            r.term_bounds(tenant_id, period),
            through,
            model.freshness_doc(fresh_row, now_us()),
        )

    def statements(r: Reader, tenant_id: str) -> list[dict[str, Any]]:
        return [model.statement_summary(row) for row in r.issued(tenant_id)]

    def issued_one(r: Reader, tenant_id: str, period: str) -> tuple[dict[str, Any], str]:
        for row in r.issued(tenant_id):
            if row["period"] == period:
                return json.loads(row["canonical_json"]), row["digest_sha256"]
        raise HTTPException(404, f"no statement issued for {period}")

    def draft(r: Reader, tenant_id: str, period: Period) -> dict[str, Any]:
        found = r.draft(tenant_id, period)
        if found is None:
            raise HTTPException(
                404, f"no draft of {period.label} yet (drafts are drawn every few minutes)"
            )
        document, drawn_at = found
        statement = json.loads(document)
        return {
            "tenant_id": tenant_id,
            "month": period.label,
            "draft": True,
            "drawn_at": drawn_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "total": statement["totals"]["total"],
            "currency": statement["currency"],
            "statement": statement,
        }

    def gaps(r: Reader, tenant_id: str) -> dict[str, Any]:
        return model.gaps_doc(tenant_id, r.gaps(tenant_id), now_us())

    # ---- the JSON API ----

    @app.get("/api/v1/tenants", response_model=schema.Tenants, responses=_PROBLEMS)
    def api_tenants(auth: Auth) -> dict[str, Any]:
        with readers() as r:
            rows = r.tenants()
        return {"tenants": [{"tenant_id": t, "name": n} for t, n in rows if auth.may_read(t)]}

    @app.get("/api/v1/tenants/{tenant_id}/usage", response_model=schema.Usage, responses=_PROBLEMS)
    def api_usage(auth: Auth, tenant_id: TenantPath, month: MonthQuery = None) -> dict:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            return usage(r, tenant_id, period_of(month))

    @app.get(
        "/api/v1/tenants/{tenant_id}/position", response_model=schema.Position, responses=_PROBLEMS
    )
    def api_position(auth: Auth, tenant_id: TenantPath, month: MonthQuery = None) -> dict:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            return position(r, tenant_id, period_of(month))

    @app.get("/api/v1/tenants/{tenant_id}/draft", response_model=schema.Draft, responses=_PROBLEMS)
    def api_draft(auth: Auth, tenant_id: TenantPath, month: MonthQuery = None) -> dict:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            return draft(r, tenant_id, period_of(month))

    @app.get(
        "/api/v1/tenants/{tenant_id}/statements",
        response_model=schema.Statements,
        responses=_PROBLEMS,
    )
    def api_statements(auth: Auth, tenant_id: TenantPath) -> dict:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            return {"tenant_id": tenant_id, "statements": statements(r, tenant_id)}

    @app.get(
        "/api/v1/tenants/{tenant_id}/statements/{period}/statement.{kind}",
        responses={
            **_PROBLEMS,
            200: {
                "content": {"application/json": {}, "text/csv": {}, "text/html": {}},
                "description": "the file as `meter statements` wrote it",
            },
        },
        response_class=Response,
    )
    def api_statement_file(
        auth: Auth,
        tenant_id: TenantPath,
        period: Annotated[str, Path(pattern=MONTH)],
        kind: Annotated[str, Path(pattern=r"^(json|csv|html)$")],
    ) -> Response:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            statement, digest = issued_one(r, tenant_id, period)
        body, media = {
            "json": (lambda: json_file_bytes(statement), "application/json"),
            "csv": (lambda: render_csv(statement), "text/csv; charset=utf-8"),
            "html": (lambda: render_html(statement, digest), "text/html; charset=utf-8"),
        }[kind]
        name = f"{statement['statement_id']}.{kind}"
        return Response(
            body(),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/api/v1/tenants/{tenant_id}/gaps", response_model=schema.Gaps, responses=_PROBLEMS)
    def api_gaps(auth: Auth, tenant_id: TenantPath) -> dict:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            return gaps(r, tenant_id)

    @app.get("/api/v1/freshness", response_model=schema.Fresh, responses=_PROBLEMS)
    def api_freshness(auth: Auth) -> dict:
        with readers() as r:
            return model.freshness_doc(r.freshness(), now_us())

    # ---- pages ----

    @app.get("/login", include_in_schema=False)
    def login(token: str = "") -> Response:
        try:
            found = grant_of(token, now_us())
        except TokenRefused:
            return HTMLResponse(pages.refused(), 401, headers=_HEADERS)
        target = "/" if found.kind == FINANCE else f"/tenants/{found.tenant_id}"
        response = RedirectResponse(target, 303, headers=_HEADERS)
        max_age = max((found.expires_us - now_us()) // US_PER_SECOND, 1)
        response.set_cookie(
            COOKIE, token, max_age=max_age, httponly=True, samesite="strict", secure=False, path="/"
        )
        return response

    @app.get("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", 303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", include_in_schema=False)
    def home(auth: Auth) -> Response:
        if auth.kind != FINANCE:
            return RedirectResponse(f"/tenants/{auth.tenant_id}", 303, headers=_HEADERS)
        with readers() as r:
            return _html(
                pages.tenant_list(r.tenants(), model.freshness_doc(r.freshness(), now_us()))
            )

    @app.get("/tenants/{tenant_id}", include_in_schema=False)
    def tenant_page(auth: Auth, tenant_id: TenantPath, month: MonthQuery = None) -> Response:
        with readers() as r:
            name = tenant_of(auth, tenant_id, r)
            fresh_row = r.freshness()
        period = period_of(month)

        def on_own(call: Callable[[Reader], Any]) -> Any:
            with readers() as own:
                return call(own)

        # The page's questions are independent: asked side by side on the pool's
        # connections, the page takes as long as the slowest, not their sum.
        parts = [
            fan_out.submit(on_own, call)
            for call in (
                lambda r: usage(r, tenant_id, period, fresh_row),
                lambda r: position(r, tenant_id, period, fresh_row),
                lambda r: gaps(r, tenant_id),
                lambda r: statements(r, tenant_id),
                lambda r: r.draft(tenant_id, period) is not None,
            )
        ]
        u, p, g, st, has_draft = (part.result() for part in parts)
        return _html(pages.overview(name, u, p, g, st, has_draft, auth.kind == FINANCE))

    @app.get("/tenants/{tenant_id}/draft", include_in_schema=False)
    def draft_page(auth: Auth, tenant_id: TenantPath, month: MonthQuery = None) -> Response:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            found = draft(r, tenant_id, period_of(month))
        return _html(render_html(found["statement"], "").decode())

    @app.get("/tenants/{tenant_id}/statements/{period}", include_in_schema=False)
    def statement_page(
        auth: Auth, tenant_id: TenantPath, period: Annotated[str, Path(pattern=MONTH)]
    ) -> Response:
        with readers() as r:
            tenant_of(auth, tenant_id, r)
            statement, digest = issued_one(r, tenant_id, period)
        return _html(render_html(statement, digest).decode())

    @app.exception_handler(HTTPException)
    def problem(request: Request, exc: HTTPException) -> Response:
        if _wants_html(request):
            return HTMLResponse(
                pages.problem(exc.status_code, str(exc.detail)), exc.status_code, headers=_HEADERS
            )
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=_HEADERS)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid')}"
        return JSONResponse({"detail": detail}, 422, headers=_HEADERS)

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    return app


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers=_HEADERS)
