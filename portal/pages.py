"""The portal's pages: server-rendered HTML (no script), from the same documents the API
returns, so a figure on a page is the API's figure. Every value is escaped."""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Any

from billing.render import daily_chart_svg
from portal.model import hours_text

_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;color:#1d232b;margin:0;
background:#f5f6f8;font-size:14px;line-height:1.45}
header{background:#14324f;color:#fff;padding:14px 32px;display:flex;align-items:center;
justify-content:space-between}header .brand{font-weight:bold;font-size:16px}
header a{color:#cfe0f3;text-decoration:none;margin-left:16px}
main{max-width:980px;margin:24px auto;padding:0 24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:16px;margin:0 0 10px}
.card{background:#fff;border:1px solid #dfe3e8;border-radius:8px;padding:18px 20px;
margin:0 0 18px}.muted{color:#5d6670;font-size:12px}
.fresh{padding:8px 12px;border-radius:6px;margin:0 0 18px;font-size:13px}
.fresh.ok{background:#e7f4ea;color:#1e5e2f}.fresh.stale{background:#fdecea;color:#8a1c12;
font-weight:bold}.kpis{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}
.kpi{background:#fff;border:1px solid #dfe3e8;border-radius:8px;padding:12px 14px}
.kpi .v{font-size:20px;font-weight:bold;font-variant-numeric:tabular-nums}
.kpi .l{color:#5d6670;font-size:12px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;
border-bottom:1px solid #eceef1;vertical-align:top}th{font-size:12px;color:#5d6670}
.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.bar{background:#e8ecf1;border-radius:4px;height:12px;position:relative;margin:6px 0}
.bar span{display:block;height:12px;border-radius:4px;background:#2f6fb2}
.bar i{position:absolute;top:-3px;width:2px;height:18px;background:#b3261e}
.gap{color:#8a1c12}.ok{color:#1e5e2f}code{font-size:11px;word-break:break-all}
nav.months a{margin-right:12px}.draft{color:#b3261e;font-weight:bold}
"""


def _page(title: str, body: str, who: str = "") -> str:
    links = '<a href="/logout">Sign out</a>' if who else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><span class=brand>Supercluster GPU usage</span><span>{escape(who)}"
        f"{links}</span></header><main>{body}</main></body></html>"
    )


def refused() -> str:
    return _page(
        "Link expired",
        "<div class=card><h1>This link is not valid</h1><p>It has expired or been revoked. "
        "Ask your account team for a new one.</p></div>",
    )


def problem(status: int, detail: str) -> str:
    return _page(
        f"{status}",
        f"<div class=card><h1>{status}</h1><p>{escape(detail)}</p></div>",
    )


def _fresh(doc: dict[str, Any]) -> str:
    if doc["usage_through"] is None:
        return '<div class="fresh stale" id=freshness>Nothing has been metered yet.</div>'
    through = doc["usage_through"].replace("T", " ").replace("Z", " UTC")
    if doc["stale"]:
        return (
            f'<div class="fresh stale" id=freshness>Usage through {escape(through)}: '
            f"STALE, nothing new from the pipeline for {_duration(doc['age_s'])}; figures "
            "may be behind.</div>"
        )
    return f'<div class="fresh ok" id=freshness>Usage through {escape(through)}</div>'


def _duration(seconds: int) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def tenant_list(tenants: list[tuple[str, str]], fresh: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td><a href="/tenants/{escape(t)}">{escape(t)}</a></td><td>{escape(n)}</td></tr>'
        for t, n in tenants
    )
    return _page(
        "All tenants",
        f"{_fresh(fresh)}<div class=card><h1>All tenants</h1><table><tr><th>Tenant</th>"
        f"<th>Name</th></tr>{rows}</table></div>",
        "finance",
    )


def _months(month: str, tenant_id: str) -> str:
    year, mon = int(month[:4]), int(month[5:])
    prev = f"{year - (mon == 1):04d}-{12 if mon == 1 else mon - 1:02d}"
    nxt = f"{year + (mon == 12):04d}-{1 if mon == 12 else mon + 1:02d}"
    base = f"/tenants/{escape(tenant_id)}"
    return (
        f'<nav class=months><a href="{base}?month={prev}">&larr; {prev}</a>'
        f'<a href="{base}?month={nxt}">{nxt} &rarr;</a></nav>'
    )


def _kpi(value: str, label: str, ident: str) -> str:
    return (
        f'<div class=kpi><div class=v id="{ident}">{escape(value)}</div>'
        f"<div class=l>{label}</div></div>"
    )


def _usage(usage: dict[str, Any]) -> str:
    t = usage["totals"]
    chart = daily_chart_svg(
        [
            {
                "date": d["date"],
                "allocated_us": int(d["allocated_us"]),
                "mig_slice_us": int(d["mig_slice_us"]),
            }
            for d in usage["daily"]
        ]
    )
    rows = "".join(
        f"<tr><td>{escape(r['sku'])}</td><td>{escape(r['cluster'])}</td>"
        f'<td class=num data-us="{r["measured_us"]}">{_h(r["measured_us"])}</td>'
        f'<td class=num data-us="{r["corrections_us"]}">{_h(r["corrections_us"])}</td>'
        f'<td class=num data-us="{r["billable_us"]}">{escape(r["billable_gpu_hours"])}</td>'
        f'<td class=num data-us="{r["credited_unhealthy_us"]}">'
        f"{_h(r['credited_unhealthy_us'])}</td></tr>"
        for r in usage["billable"]
    )
    return (
        "<div class=kpis>"
        + _kpi(t["allocated_gpu_hours"], "GPU-hours allocated", "allocated-gpu-hours")
        + _kpi(t["billable_gpu_hours"], "GPU-hours billable", "billable-gpu-hours")
        + _kpi(
            t["credited_unhealthy_gpu_hours"],
            "GPU-hours unhealthy, credited",
            "unhealthy-gpu-hours",
        )
        + _kpi(t["energy_kwh"], "kWh energy", "energy-kwh")
        + "</div>"
        + (
            f"<p class=muted id=mig>MIG slices, apart from GPU-hours: "
            f"{escape(t['mig_slice_hours'])} slice-hours allocated.</p>"
            if t["mig_slice_us"] != "0"
            else ""
        )
        + "<div class=card style='margin-top:18px'><h2>GPU-hours by day</h2>"
        f"{chart}</div><div class=card><h2>Measured, billable and credited, by SKU and "
        "cluster (GPU-hours; slice-hours for MIG)</h2><table id=billable><tr><th>SKU</th>"
        "<th>Cluster</th>"
        "<th class=num>Measured</th><th class=num>Corrections</th><th class=num>Billable</th>"
        f"<th class=num>Unhealthy, credited</th></tr>{rows}</table><p class=muted>Billable "
        "is measured plus corrections. Unhealthy time is allocated time on a GPU reported "
        "unhealthy: it is billed and credited back at the SLA multiplier.</p></div>"
    )


def _h(us: str) -> str:
    return escape(hours_text(int(us)))


def _position(position: dict[str, Any]) -> str:
    cards = []
    for c in position["contracts"]:
        used = min(float(c["used_fraction"]), 1.5)
        mark = min(float(c["elapsed_fraction"]), 1.0)
        cards.append(
            f"<h2>Commitment {escape(c['contract_id'])}: {c['committed_gpus']} GPUs</h2>"
            f'<div class=bar><span style="width:{min(used, 1.0) * 100:.1f}%"></span>'
            f'<i style="left:{mark * 100:.1f}%"></i></div>'
            "<table><tr><th>Committed</th><th>Used so far</th><th>Projected at month end</th>"
            "<th>Outlook</th></tr>"
            f'<tr><td class=num id="committed-{escape(c["contract_id"])}">'
            f"{escape(c['committed_gpu_hours'])}</td>"
            f'<td class=num id="used-{escape(c["contract_id"])}">{escape(c["used_gpu_hours"])}</td>'
            f"<td class=num>{escape(c['projected_gpu_hours'])}</td>"
            f"<td>{_outlook(c)}</td></tr></table>"
        )
    body = "".join(cards) or "<p>No contract is in force this month.</p>"
    return (
        f"<div class=card id=position>{body}<p class=muted>{escape(position['rule'])} "
        "The red mark is the time elapsed.</p></div>"
    )


def _outlook(c: dict[str, Any]) -> str:
    if c["outlook"] == "overage":
        return f"Overage of {escape(c['projected_overage_gpu_hours'])} GPU-hours"
    if c["outlook"] == "commitment true-up":
        return (
            f"Short of the commitment by {escape(c['projected_shortfall_gpu_hours'])} "
            f"GPU-hours: the minimum of {escape(c['minimum_monthly_commitment'])} "
            f"{escape(c['currency'])} applies (a true-up line)"
        )
    return "On the commitment"


def _gaps(gaps: dict[str, Any]) -> str:
    if gaps["complete"]:
        return (
            "<div class=card id=gaps><h2>Completeness</h2><p class=ok>Every report of the "
            "nodes that served you this month has arrived.</p></div>"
        )
    rows = "".join(
        f"<tr><td>{escape(g['node_id'])}</td><td>{escape(g['boot_id'])}</td>"
        f"<td class=num>{g['first_missing_seq']}–{g['last_missing_seq']}</td>"
        f"<td class=num>{g['missing_reports']}</td><td>{escape(g['first_seen'])}</td></tr>"
        for g in gaps["open_gaps"]
    )
    return (
        "<div class=card id=gaps><h2 class=gap>Completeness: "
        f"{len(gaps['open_gaps'])} open gap(s), possible under-metering</h2>"
        "<table><tr><th>Node</th><th>Boot</th><th class=num>Missing seq</th>"
        f"<th class=num>Reports</th><th>Since</th></tr>{rows}</table>"
        f"<p class=muted>{escape(gaps['meaning'])}</p></div>"
    )


def _statements(tenant_id: str, statements: list[dict[str, Any]]) -> str:
    base = f"/api/v1/tenants/{escape(tenant_id)}/"
    rows = []
    for s in statements:
        by_period: dict[str, list[Decimal]] = {}
        for a in s["adjustments"]:
            by_period.setdefault(a["for_period"], []).append(Decimal(a["amount"]))
        adj = "; ".join(
            f"{period}: {len(amounts)} prior-period line(s), {sum(amounts, Decimal(0))} "
            f"{s['currency']}"
            for period, amounts in sorted(by_period.items())
        )
        links = " ".join(
            f'<a href="{base}{escape(path)}">{kind.upper()}</a>'
            for kind, path in s["downloads"].items()
        )
        rows.append(
            f'<tr><td><a href="/tenants/{escape(tenant_id)}/statements/{s["period"]}">'
            f"{escape(s['period'])}</a></td><td>{escape(s['statement_number'])}</td>"
            f"<td class=num>{escape(s['total'])} {escape(s['currency'])}</td><td>{links}</td>"
            f"<td><code>{escape(s['digest_sha256'])}</code>"
            f"{f'<div class=muted>{escape(adj)}</div>' if adj else ''}</td></tr>"
        )
    check = escape(statements[0]["how_to_check"]) if statements else ""
    return (
        "<div class=card id=statements><h2>Issued statements</h2>"
        "<table><tr><th>Period</th><th>Number</th><th class=num>Total</th><th>Download</th>"
        f"<th>SHA-256 digest; adjustments</th></tr>{''.join(rows)}</table>"
        f"<p class=muted>{check}</p></div>"
    )


def overview(
    name: str,
    usage: dict[str, Any],
    position: dict[str, Any],
    gaps: dict[str, Any],
    statements: list[dict[str, Any]],
    has_draft: bool,
    finance: bool,
) -> str:
    tenant_id, month = usage["tenant_id"], usage["month"]
    if any(st["period"] == month for st in statements):
        draft = f"<span class=muted>{month} is issued: its statement is listed below.</span>"
    elif has_draft:
        draft = (
            f'<a class=draft href="/tenants/{escape(tenant_id)}/draft?month={month}">'
            f"DRAFT statement of {month}</a>"
        )
    else:
        draft = f"<span class=muted>No draft of {month} yet.</span>"
    body = (
        f"{_fresh(usage)}<h1>{escape(name)}</h1><p class=muted>{escape(tenant_id)} · "
        f"{month}</p>{_months(month, tenant_id)}<p>{draft}</p>{_usage(usage)}"
        f"{_position(position)}{_gaps(gaps)}{_statements(tenant_id, statements)}"
    )
    return _page(f"{name}: usage {month}", body, "finance" if finance else name)
