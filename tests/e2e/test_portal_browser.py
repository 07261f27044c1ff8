"""The portal as a tenant sees it: real headless Chromium (Debian's ``chromium``, driven
by Playwright) opens the link ``meter portal token issue`` printed, reads the live numbers
and checks them against the views, opens the draft and an issued statement, and is
refused with an expired token, a revoked one and another tenant's URL. Screenshots are
kept under the test artifacts folder (tests/browser.py)."""

from __future__ import annotations

import shutil
import time

import pytest

from portal.model import hours_text, kwh_text
from tests.browser import ARTIFACTS, QUIET_FLAGS
from tests.e2e.portal_harness import DRAFTED, ISSUED, SHAPE, meter

pytestmark = pytest.mark.e2e
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser_env(portal_world):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: apt-get install -y chromium (make test does it)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=QUIET_FLAGS)
        try:
            yield portal_world.portal, portal_world.finance, browser
        finally:
            browser.close()


def _login_url(portal, *args: str) -> str:
    done = meter(
        "portal",
        "token",
        "issue",
        *args,
        "--public-url",
        portal.url,
        "--clickhouse-url",
        portal.clickhouse_url,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _page(browser):
    return browser.new_page(viewport={"width": 1100, "height": 1600})


def test_a_tenant_opens_its_link_and_reads_the_views_numbers(browser_env):
    portal, finance, browser = browser_env
    tenant = SHAPE.tenant_ids[0]
    page = _page(browser)
    page.goto(_login_url(portal, "--tenant", tenant, "--ttl", "1h"))
    assert page.url == f"{portal.url}/tenants/{tenant}"  # the token left the address bar
    page.goto(f"{portal.url}/tenants/{tenant}?month={ISSUED}")
    whole, energy, unhealthy = finance.execute(
        "SELECT sum(allocated_us), sum(energy_mj), sum(unhealthy_us) FROM usage_by_day "
        "WHERE tenant_id = %(t)s AND toYYYYMM(day) = 202610 AND position(sku, '-MIG-') = 0",
        {"t": tenant},
    )[0]
    committed, used = finance.execute(
        "SELECT toString(committed_gpu_hours), toString(allocated_gpu_hours) "
        "FROM contract_position_by_month WHERE tenant_id = %(t)s AND month = '2026-10-01'",
        {"t": tenant},
    )[0]
    assert page.inner_text("#allocated-gpu-hours") == hours_text(int(whole))
    assert page.inner_text("#energy-kwh") == kwh_text(int(energy))
    assert page.inner_text("#unhealthy-gpu-hours") == hours_text(int(unhealthy))
    assert page.inner_text(f"#committed-C-{tenant}") == committed
    assert page.inner_text(f"#used-C-{tenant}") == used
    assert "Usage through 2026-11-01 01:00:00 UTC: STALE" in page.inner_text("#freshness")
    assert "sc1-node-0-0-0" in page.inner_text("#gaps")
    assert "SC-000001" in page.inner_text("#statements")
    assert page.locator("svg[aria-label='GPU-hours per day'] rect").count() >= 31
    page.screenshot(path=str(ARTIFACTS / "portal-overview.png"), full_page=True)

    page.goto(f"{portal.url}/tenants/{tenant}?month={DRAFTED}")
    page.click("a.draft")
    assert "DRAFT" in page.inner_text("body")
    assert f"{tenant}-{DRAFTED}-DRAFT" in page.content()
    page.screenshot(path=str(ARTIFACTS / "portal-draft.png"), full_page=True)

    page.goto(f"{portal.url}/tenants/{tenant}?month={ISSUED}")
    page.click(f"a[href='/tenants/{tenant}/statements/{ISSUED}']")
    digest = finance.execute(
        "SELECT digest_sha256 FROM issued_statements WHERE tenant_id = %(t)s", {"t": tenant}
    )[0][0]
    assert digest in page.content() and "DRAFT" not in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "portal-statement.png"), full_page=True)
    for name in ("portal-overview", "portal-draft", "portal-statement"):
        data = (ARTIFACTS / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, name
    page.close()


def test_expired_revoked_and_other_tenants_links_are_refused(browser_env):
    portal, _, browser = browser_env
    tenant, other = SHAPE.tenant_ids[0], SHAPE.tenant_ids[1]
    page = _page(browser)
    page.goto(_login_url(portal, "--tenant", tenant, "--ttl", "1h"))
    response = page.goto(f"{portal.url}/tenants/{other}?month={ISSUED}")
    assert response.status == 403
    assert other not in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "portal-other-tenant.png"))
    page.close()

    revoked_url = _login_url(portal, "--tenant", tenant, "--ttl", "1h", "--label", "gone")
    page = _page(browser)
    page.goto(revoked_url)
    assert page.url.endswith(f"/tenants/{tenant}")
    listed = meter("portal", "token", "list", "--clickhouse-url", portal.clickhouse_url).stdout
    token_id = next(line.split()[0] for line in listed.splitlines() if line.endswith("gone"))
    assert (
        meter(
            "portal", "token", "revoke", token_id, "--clickhouse-url", portal.clickhouse_url
        ).returncode
        == 0
    )
    response = page.reload()  # the cookie is still there; the token is not valid
    assert response.status == 401
    assert tenant not in page.inner_text("body")
    page.close()

    expiring = _login_url(portal, "--tenant", tenant, "--ttl", "2s")
    time.sleep(2.5)
    page = _page(browser)
    response = page.goto(expiring)
    assert response.status == 401 and "not valid" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "portal-expired.png"))
    page.close()
