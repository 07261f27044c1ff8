"""The tenant portal's API as a tenant and finance reach it: ``meter portal serve`` over
a known history (tests/e2e/portal_harness.py), as the read-only finance user.

Every figure is checked against the views (read here as finance) and against the
generator's exact totals; every endpoint is tried with every other tenant's identifiers;
tokens expire and are revoked at once; the OpenAPI description is fuzzed by schemathesis;
SIGTERM stops the server within seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from bench import history
from core.identity import MIG_SLICES_PER_GPU, gpu_sevenths
from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
from tests.e2e.portal_harness import (
    DRAFTED,
    ISSUED,
    SHAPE,
    clickhouse_url,
    meter,
    start_portal,
)

pytestmark = pytest.mark.e2e
TENANTS = SHAPE.tenant_ids


@pytest.fixture
def portal_env(portal_world):
    w = portal_world
    return w.portal, w.finance, w.warehouse, w.folder, w.info, w.database


def _october_days() -> list[int]:
    return [d for d in range(len(SHAPE.days())) if SHAPE.days()[d] >= history.Shape(1).start_us]


def test_the_live_usage_equals_the_views_and_the_generator_exactly(portal_env):
    portal, finance, *_ = portal_env
    expected = history.expected_totals(SHAPE)
    days = _october_days()
    whole = [s for s in SHAPE.sku_names if gpu_sevenths(s) == MIG_SLICES_PER_GPU]
    for t, tenant in enumerate(TENANTS):
        doc = portal.get(f"/api/v1/tenants/{tenant}/usage?month={ISSUED}", portal.tokens[tenant])
        assert doc.status_code == 200, doc.text
        usage = doc.json()
        per_sku = int(expected.by_day["allocated_us"][t, days].sum()) * SHAPE.clusters
        assert usage["totals"]["allocated_us"] == str(per_sku * len(whole))
        assert usage["totals"]["mig_slice_us"] == str(per_sku * (SHAPE.skus - len(whole)))
        energy = int(expected.by_day["energy_mj"][t, days].sum()) * SHAPE.clusters * len(whole)
        assert usage["totals"]["energy_mj"] == str(energy)
        rows = finance.execute(
            "SELECT toString(day), sku, cluster, allocated_us, busy_us, unhealthy_us, energy_mj,"
            " toString(allocated_gpu_hours) FROM usage_by_day WHERE tenant_id = %(t)s "
            "AND toYYYYMM(day) = 202610 ORDER BY day, sku, cluster",
            {"t": tenant},
        )
        assert [
            (
                r["day"],
                r["sku"],
                r["cluster"],
                int(r["allocated_us"]),
                int(r["busy_us"]),
                int(r["unhealthy_us"]),
                int(r["energy_mj"]),
                r["allocated_gpu_hours"],
            )
            for r in usage["by_day"]
        ] == [(d, s, c, a, b, u, e, h) for d, s, c, a, b, u, e, h in rows]
        billable = finance.execute(
            "SELECT sku, cluster, metered_allocated_us, correction_allocated_us, allocated_us, "
            "unhealthy_us, energy_mj FROM billable_usage_by_month WHERE tenant_id = %(t)s "
            "AND month = '2026-10-01' ORDER BY sku, cluster",
            {"t": tenant},
        )
        assert [
            (
                r["sku"],
                r["cluster"],
                *(
                    int(r[k])
                    for k in (
                        "measured_us",
                        "corrections_us",
                        "billable_us",
                        "credited_unhealthy_us",
                        "energy_mj",
                    )
                ),
            )
            for r in usage["billable"]
        ] == [tuple(r) for r in billable]
        assert usage["usage_through"] == "2026-11-01T01:00:00Z"  # the states' written_at
        assert usage["stale"] is True  # written weeks before now: the page must say so


def test_the_commitment_position_equals_the_view(portal_env):
    portal, finance, *_ = portal_env
    for tenant in TENANTS:
        doc = portal.get(
            f"/api/v1/tenants/{tenant}/position?month={ISSUED}", portal.tokens[tenant]
        ).json()
        rows = finance.execute(
            "SELECT contract_id, committed_gpu_us, allocated_us, toString(committed_gpu_hours),"
            " toString(allocated_gpu_hours) FROM contract_position_by_month "
            "WHERE tenant_id = %(t)s AND month = '2026-10-01'",
            {"t": tenant},
        )
        assert [
            (
                c["contract_id"],
                int(c["committed_gpu_us"]),
                int(c["used_gpu_us"]),
                c["committed_gpu_hours"],
                c["used_gpu_hours"],
            )
            for c in doc["contracts"]
        ] == [tuple(r) for r in rows]
        # October has closed: the projection is what was used.
        assert all(c["projected_gpu_us"] == c["used_gpu_us"] for c in doc["contracts"])
        assert "Straight line" in doc["rule"]


def test_issued_statements_download_as_issued_and_verify(portal_env, tmp_path):
    portal, finance, _, folder, *_ = portal_env
    for tenant in TENANTS:
        listing = portal.get(f"/api/v1/tenants/{tenant}/statements", portal.tokens[tenant])
        [statement] = listing.json()["statements"]
        issued_digest = finance.execute(
            "SELECT digest_sha256 FROM issued_statements WHERE tenant_id = %(t)s "
            "AND period = %(p)s",
            {"t": tenant, "p": ISSUED},
        )[0][0]
        assert statement["digest_sha256"] == issued_digest
        assert "meter verify-statement" in statement["how_to_check"]
        for kind in ("json", "csv", "html"):
            got = portal.get(
                f"/api/v1/tenants/{tenant}/{statement['downloads'][kind]}", portal.tokens[tenant]
            )
            assert got.status_code == 200, got.text
            written = folder / "statements" / tenant / f"{tenant}-{ISSUED}.{kind}"
            assert got.content == written.read_bytes(), kind
            assert f'filename="{tenant}-{ISSUED}.{kind}"' in got.headers["content-disposition"]
        json_file = portal.get(
            f"/api/v1/tenants/{tenant}/{statement['downloads']['json']}", portal.tokens[tenant]
        )
        path = tmp_path / f"{tenant}.json"
        path.write_bytes(json_file.content)
        done = meter("verify-statement", str(path))
        assert done.returncode == 0 and issued_digest in done.stdout, done.stdout + done.stderr


def test_the_draft_of_an_open_month_is_marked_draft(portal_env):
    portal, finance, *_ = portal_env
    for tenant in TENANTS:
        doc = portal.get(f"/api/v1/tenants/{tenant}/draft?month={DRAFTED}", portal.tokens[tenant])
        assert doc.status_code == 200, doc.text
        draft = doc.json()
        assert draft["draft"] is True and draft["statement"]["draft"] is True
        assert draft["statement"]["statement_id"] == f"{tenant}-{DRAFTED}-DRAFT"
        stored = finance.execute(
            "SELECT total FROM draft_statements WHERE tenant_id = %(t)s AND period = %(p)s",
            {"t": tenant, "p": DRAFTED},
        )
        assert [(draft["total"],)] == stored
        # an issued month has no draft
        assert (
            portal.get(
                f"/api/v1/tenants/{tenant}/draft?month={ISSUED}", portal.tokens[tenant]
            ).status_code
            == 404
        )


def test_completeness_shows_the_open_gaps_of_the_nodes_that_served_the_tenant(portal_env):
    portal, *_ = portal_env
    for tenant in TENANTS:
        doc = portal.get(f"/api/v1/tenants/{tenant}/gaps", portal.tokens[tenant])
        gaps = doc.json()
        # Of the generator's three open gaps only sc1-node-0-0-0 carried usage (of every
        # tenant); sc1-node-0-0-1 and -2 have no ledger rows and serve no one.
        assert gaps["complete"] is False
        assert [
            (g["node_id"], g["first_missing_seq"], g["last_missing_seq"]) for g in gaps["open_gaps"]
        ] == [("sc1-node-0-0-0", "100", "102")]


def _endpoints(tenant: str) -> list[str]:
    base = f"/api/v1/tenants/{tenant}"
    return [
        f"{base}/usage?month={ISSUED}",
        f"{base}/position?month={ISSUED}",
        f"{base}/draft?month={DRAFTED}",
        f"{base}/statements",
        f"{base}/gaps",
        *(f"{base}/statements/{ISSUED}/statement.{k}" for k in ("json", "csv", "html")),
        f"/tenants/{tenant}?month={ISSUED}",
        f"/tenants/{tenant}/draft?month={DRAFTED}",
        f"/tenants/{tenant}/statements/{ISSUED}",
    ]


def test_no_tenant_token_reaches_another_tenants_data_by_any_path(portal_env):
    portal, *_ = portal_env
    refused_bodies = set()
    for tenant in TENANTS:
        token = portal.tokens[tenant]
        for path in _endpoints(tenant):
            assert portal.get(path, token).status_code == 200, path
        for other in [*(t for t in TENANTS if t != tenant), "no-such-tenant"]:
            for path in _endpoints(other):
                got = portal.get(path, token)
                assert got.status_code == 403, (tenant, path, got.status_code)
                for name in (other, *(t for t in TENANTS if t != tenant)):
                    if name != "no-such-tenant":
                        assert name not in got.text, (tenant, path)
                refused_bodies.add((path.startswith("/api/"), got.text))
        # Another tenant's id in a query parameter, a header or a cookie changes nothing.
        other = next(t for t in TENANTS if t != tenant)
        for extra in (
            {"params": {"tenant_id": other}},
            {"headers": {"X-Tenant-Id": other, "Authorization": f"Bearer {token}"}},
        ):
            got = httpx.get(
                f"{portal.url}/api/v1/tenants/{tenant}/usage",
                timeout=30,
                headers=extra.get("headers", {"Authorization": f"Bearer {token}"}),
                params=extra.get("params"),
            )
            assert got.status_code == 200 and got.json()["tenant_id"] == tenant
            assert other not in got.text
        listing = portal.get("/api/v1/tenants", token).json()
        assert [t["tenant_id"] for t in listing["tenants"]] == [tenant]
        # A download name cannot walk out of the tenant's statements.
        for sneaky in (
            f"/api/v1/tenants/{tenant}/statements/{ISSUED}/statement.json/../../"
            f"{other}/statements/{ISSUED}/statement.json",
            f"/api/v1/tenants/{tenant}%2F..%2F{other}/statements",
        ):
            got = portal.get(sneaky, token)
            assert got.status_code in (403, 404, 422) and other not in got.text, sneaky
    # The same refusal whatever was asked: nothing tells one tenant from another, or an
    # existing tenant from none.
    assert len(refused_bodies) == 2, refused_bodies


def test_finance_reaches_every_tenant_and_is_told_of_an_unknown_one(portal_env):
    portal, *_ = portal_env
    token = portal.tokens["finance"]
    for tenant in TENANTS:
        for path in _endpoints(tenant):
            assert portal.get(path, token).status_code == 200, path
    assert portal.get("/api/v1/tenants/no-such-tenant/usage", token).status_code == 404
    listing = portal.get("/api/v1/tenants", token).json()
    assert [t["tenant_id"] for t in listing["tenants"]] == TENANTS


def test_tokens_expire_are_revoked_at_once_and_are_stored_only_as_hashes(portal_env):
    portal, _, warehouse, *_ = portal_env
    tenant = TENANTS[0]
    path = f"/api/v1/tenants/{tenant}/usage?month={ISSUED}"
    short = portal.issue("--tenant", tenant, "--ttl", "2s", "--label", "short")
    assert portal.get(path, short).status_code == 200
    doomed = portal.issue("--tenant", tenant, "--ttl", "1h", "--label", "doomed")
    assert portal.get(path, doomed).status_code == 200
    listed = meter(
        "portal", "token", "list", "--tenant", tenant, "--clickhouse-url", portal.clickhouse_url
    )
    assert listed.returncode == 0, listed.stderr
    doomed_id = next(line.split()[0] for line in listed.stdout.splitlines() if "doomed" in line)
    assert doomed not in listed.stdout and short not in listed.stdout
    revoked = meter(
        "portal", "token", "revoke", doomed_id, "--clickhouse-url", portal.clickhouse_url
    )
    assert revoked.returncode == 0, revoked.stderr
    assert portal.get(path, doomed).status_code == 401  # the very next request
    time.sleep(2.5)
    got = portal.get(path, short)
    assert got.status_code == 401 and tenant not in got.text
    states = meter(
        "portal", "token", "list", "--tenant", tenant, "--clickhouse-url", portal.clickhouse_url
    ).stdout
    assert any(line.startswith(doomed_id) and " revoked " in line for line in states.splitlines())
    assert any("expired" in line and "short" in line for line in states.splitlines())
    stored = warehouse.execute("SELECT * FROM portal_tokens")
    text = repr(stored)
    for token in (short, doomed, *portal.tokens.values()):
        assert token not in text and token[4:] not in text
    for bad in ("", "mpt_" + "A" * 43, "Bearer", short[:-1]):
        assert portal.get(path, bad or None).status_code == 401


def test_the_openapi_description_holds_under_schemathesis(portal_env, tmp_path):
    portal, *_ = portal_env
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{portal.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {portal.tokens['finance']}",
            "--checks",
            "all",
            "--max-examples",
            "15",
            "--generation-deterministic",
            "--request-timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    assert "passed" in run.stdout and " 0 passed" not in run.stdout


def test_portal_mistakes_get_one_line_and_status_2(portal_env, tmp_path):
    portal, _, _, _, info, database = portal_env
    url = portal.clickhouse_url
    cases = [
        (
            ("portal", "token", "issue", "--tenant", "nobody", "--clickhouse-url", url),
            "not in tenants_current",
        ),
        (
            (
                "portal",
                "token",
                "issue",
                "--tenant",
                TENANTS[0],
                "--ttl",
                "12 hours",
                "--clickhouse-url",
                url,
            ),
            "--ttl",
        ),
        (("portal", "token", "issue", "--clickhouse-url", url), "--tenant"),
        (("portal", "token", "revoke", "abcdefabcdef", "--clickhouse-url", url), "no token"),
        (("portal", "token", "revoke", "xyz", "--clickhouse-url", url), "12 hex digits"),
        (
            (
                "portal",
                "serve",
                "--port",
                portal.url.rsplit(":", 1)[1],
                "--clickhouse-url",
                clickhouse_url(info, database, FINANCE_USER, FINANCE_PASSWORD),
            ),
            "cannot listen",
        ),
        (
            (
                "portal",
                "serve",
                "--port",
                "0",
                "--clickhouse-url",
                clickhouse_url(info, database, FINANCE_USER, "wrong"),
            ),
            "refused the login",
        ),
        (
            ("portal", "serve", "--port", "0", "--clickhouse-url", clickhouse_url(info, "default")),
            "no portal views",
        ),
        (
            (
                "portal",
                "alerts",
                "set",
                "--tenant",
                TENANTS[0],
                "--url",
                "ftp://x",
                "--secret-file",
                str(tmp_path / "missing"),
                "--clickhouse-url",
                url,
            ),
            "missing",
        ),
    ]
    for args, says in cases:
        done = meter(*args, timeout_s=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1 and says in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_sigterm_stops_the_portal_within_seconds(portal_env, tmp_path):
    shared, _, _, _, info, database = portal_env
    portal = start_portal(info, database, tmp_path)  # its own: the shared one serves on
    assert portal.get("/api/v1/freshness", shared.tokens["finance"]).status_code == 200
    took = portal.stop()
    assert portal.process.returncode == 0, portal.log.read_text()[-2000:]
    assert took < 10, took
