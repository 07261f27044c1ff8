"""CSV line items and the HTML statement, rendered from the canonical document only.

Renderers are pure functions of the document, so an issued statement re-rendered from the
JSON stored in ClickHouse comes out byte for byte as first written.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from html import escape
from typing import Any

from billing.statement import SECTIONS
from core.units import US_PER_GPU_HOUR

CSV_COLUMNS = (
    "statement_id",
    "line_no",
    "section",
    "kind",
    "for_period",
    "contract_id",
    "sku",
    "cluster",
    "rate_from",
    "rate_to",
    "quantity",
    "unit",
    "quantity_display",
    "rate",
    "amount",
    "currency",
    "statement_number",
    "issue_date",
    "due_date",
    "issuer_legal_name",
    "issuer_tax_id",
    "issuer_address",
)


def _section(line: dict[str, Any], period: str, adjusts: dict[str, str] | None = None) -> str:
    if line.get("correction"):
        ids = line["correction"].replace(",", ", ")
        if line["for_period"] == period:
            return f"Correction {ids}"
        issued = (adjusts or {}).get(line["for_period"])
        of = f" of statement {issued}" if issued else ""
        return f"Correction {ids}: adjustment for {line['for_period']}{of}"
    if line["for_period"] != period:
        issued = (adjusts or {}).get(line["for_period"])
        if issued:
            return f"Adjustment for {line['for_period']} of statement {issued}"
        if adjusts is not None and line["for_period"] in adjusts:
            return f"{line['for_period']}, never issued: billed here in full"
        return f"Adjustment for {line['for_period']}"
    return SECTIONS[line["kind"]]


def _heading_cells(statement: dict[str, Any]) -> list[str]:
    """What every CSV row repeats, so each line can be booked on its own."""
    issuer = statement.get("issuer") or {}
    return [
        statement.get("statement_number", ""),
        statement.get("issue_date", ""),
        statement.get("due_date", ""),
        issuer.get("legal_name", ""),
        issuer.get("tax_id", ""),
        "; ".join(issuer.get("address", [])),
    ]


def render_csv(statement: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    period = statement["period"]["label"]
    sid, cur, heading = statement["statement_id"], statement["currency"], _heading_cells(statement)
    for line in statement["lines"]:
        writer.writerow(
            [sid, line["line_no"], _section(line, period, statement.get("adjusts"))]
            + [line[c] for c in CSV_COLUMNS[3:15]]
            + [cur, *heading]
        )
    totals = statement["totals"]

    def summary_row(section: str, kind: str, amount: str, **cells: str) -> None:
        values = {"section": section, "kind": kind, "for_period": period, "amount": amount, **cells}
        writer.writerow([sid, "", *(values.get(c, "") for c in CSV_COLUMNS[2:15]), cur, *heading])

    if "subtotal" in totals:
        summary_row("Subtotal", "subtotal", totals["subtotal"])
    for tax in statement.get("taxes", []):  # the taxable amount shown as the quantity
        summary_row(
            f"Tax: {tax['label']}",
            "tax",
            tax["amount"],
            contract_id=tax["contract_id"],
            quantity_display=tax["taxable"],
            rate=tax["rate"],
        )
    summary_row(total_label(statement, "Total"), "total", totals["total"])
    return out.getvalue().encode("utf-8")


def total_label(statement: dict, due: str) -> str:
    """What the bottom line is: a draft's total so far, an amount due, or, below zero,
    a credit the tenant is owed (a correction or an earlier month's adjustment)."""
    if statement.get("draft"):
        return "Total so far (DRAFT, not issued)"
    return "Credit to you" if Decimal(statement["totals"]["total"]) < 0 else due


def _amount(text: str, currency: str) -> str:
    return f"{Decimal(text):,} {currency}"


def _rate_cell(line: dict[str, Any], currency: str) -> str:
    if not line["rate"]:
        return ""
    unit = "kWh" if line["unit"] == "energy_mj" else "GPU-h"
    return f"{Decimal(line['rate']):,} {currency}/{unit}"


def _qty_cell(line: dict[str, Any]) -> str:
    if not line["quantity_display"]:
        return ""
    unit = "kWh" if line["unit"] == "energy_mj" else "GPU-h"
    return f"{Decimal(line['quantity_display']):,} {unit}"


def _period_cell(line: dict[str, Any]) -> str:
    if not line["rate_from"]:
        return ""
    return f"{line['rate_from'][:16].replace('T', ' ')} – {line['rate_to'][:16].replace('T', ' ')}"


def _corrections_html(corrections: list[dict[str, Any]]) -> str:
    """Who corrected the usage billed here, why, under which ticket, and by how much."""
    if not corrections:
        return ""
    rows = []
    for c in corrections:
        scope = ", ".join(x for x in (c["tenant_id"], c["node_id"], c["gpu_uuid"]) if x)
        what = f"moved to {c['to_tenant_id']}" if c["kind"] == "reattribute" else "voided"
        hours = Decimal(c["allocated_us"]) / US_PER_GPU_HOUR
        rows.append(
            f"<tr><td><b>{escape(c['correction_id'])}</b></td>"
            f"<td>usage of {escape(scope)}, {escape(c['start'][:16].replace('T', ' '))} – "
            f"{escape(c['end'][:16].replace('T', ' '))} UTC, {escape(what)}</td>"
            f'<td>{escape(c["reason"])}<div class="sub">{escape(c["author"])}, ticket '
            f"{escape(c['ticket'])}</div></td>"
            f'<td class="num">{hours:+,.6f} GPU-h</td></tr>'
        )
    return (
        "<h2>Corrections</h2><table><thead><tr><th>Correction</th><th>What</th>"
        '<th>Reason</th><th class="num">For this tenant</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _lines_table(
    lines: list[dict[str, Any]], currency: str, period: str, adjusts: dict[str, str] | None
) -> str:
    rows = []
    current = None
    for line in lines:
        section = _section(line, period, adjusts)
        if section != current:
            rows.append(f'<tr class="section"><th colspan="6">{escape(section)}</th></tr>')
            current = section
        what = " / ".join(escape(x) for x in (line["sku"], line["cluster"]) if x) or escape(
            "Shortfall against the minimum monthly commitment"
        )
        if line["for_period"] != period:  # an adjustment says what kind of charge it moves
            what = escape(SECTIONS[line["kind"]]) + (f": {what}" if line["sku"] else "")
        rows.append(
            "<tr>"
            f"<td>{line['line_no']}</td>"
            f'<td>{what}<div class="sub">contract {escape(line["contract_id"])}</div></td>'
            f"<td>{escape(_period_cell(line))}</td>"
            f'<td class="num">{escape(_qty_cell(line))}</td>'
            f'<td class="num">{escape(_rate_cell(line, currency))}</td>'
            f'<td class="num">{escape(_amount(line["amount"], currency))}</td>'
            "</tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="6">No charges in this period.</td></tr>')
    head = (
        '<tr><th>#</th><th>Item</th><th>Rate period (UTC)</th><th class="num">Quantity</th>'
        '<th class="num">Rate</th><th class="num">Amount</th></tr>'
    )
    return f'<table class="lines"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _minimums_html(minimums: list[dict[str, Any]], currency: str) -> str:
    """How each contract's monthly minimum was prorated and trued up (shown when the term
    does not cover the whole month, or a true-up was charged)."""
    rows = []
    for m in minimums:
        if m["covered_seconds"] == m["month_seconds"] and not Decimal(m["true_up"]):
            continue
        days = Decimal(m["covered_seconds"]) / 86_400
        rows.append(
            f"<tr><td>{escape(m['contract_id'])}</td>"
            f'<td class="num">{escape(_amount(m["monthly"], currency))}</td>'
            f"<td>{m['covered_from'][:16].replace('T', ' ')} – "
            f"{m['covered_to'][:16].replace('T', ' ')} ({days:.6f} of "
            f"{m['month_seconds'] // 86_400} days)</td>"
            f'<td class="num">{escape(_amount(m["prorated"], currency))}</td>'
            f'<td class="num">{escape(_amount(m["gpu_time"], currency))}</td>'
            f'<td class="num">{escape(_amount(m["true_up"], currency))}</td></tr>'
        )
    if not rows:
        return ""
    return (
        "<h2>Minimum commitment</h2><table><thead><tr><th>Contract</th>"
        '<th class="num">Per month</th><th>Term in this month (UTC, end exclusive)</th>'
        '<th class="num">Prorated minimum</th><th class="num">GPU time</th>'
        '<th class="num">True-up</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


def _nice_ceiling(value: Decimal) -> Decimal:
    if value <= 0:
        return Decimal(1)
    step = Decimal(10) ** (value.adjusted())
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10


def daily_chart_svg(daily: list[dict[str, Any]]) -> str:
    """Bars of whole-GPU hours per day and, beside them where there are any, MIG
    slice-hours (never added together); integer pixel geometry, so the output is
    deterministic."""
    width, height, left, bottom, top = 720, 220, 64, 28, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    hours = [Decimal(d["allocated_us"]) / US_PER_GPU_HOUR for d in daily]
    slice_hours = [Decimal(d.get("mig_slice_us", 0)) / US_PER_GPU_HOUR for d in daily]
    ceiling = _nice_ceiling(max([*hours, *slice_hours], default=Decimal(0)))
    slot = plot_w // max(len(daily), 1)
    with_mig = any(slice_hours)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="GPU-hours per day">'
    ]
    for i in range(5):
        value = ceiling * i / 4
        y = top + plot_h - int(plot_h * i / 4)
        parts.append(
            f'<line x1="{left}" y1="{y}" x2="{left + plot_w}" y2="{y}" stroke="#e3e6ea"/>'
            f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" font-size="10" '
            f'fill="#555">{value.normalize():,f}</text>'
        )
    for i, (day, value, mig) in enumerate(zip(daily, hours, slice_hours, strict=True)):
        bar_h = int(plot_h * value / ceiling)
        x = left + i * slot + 1
        bar_w = max((slot - 2) // 2 if with_mig else slot - 2, 1)
        parts.append(
            f'<rect x="{x}" y="{top + plot_h - bar_h}" width="{bar_w}" '
            f'height="{bar_h}" fill="#2f6fb2">'
            f"<title>{day['date']}: {value:.6f} GPU-h</title></rect>"
        )
        if with_mig:
            mig_h = int(plot_h * mig / ceiling)
            parts.append(
                f'<rect x="{x + bar_w}" y="{top + plot_h - mig_h}" width="{bar_w}" '
                f'height="{mig_h}" fill="#d9822b">'
                f"<title>{day['date']}: {mig:.6f} MIG slice-hours</title></rect>"
            )
        if i == 0 or (i + 1) % 5 == 0:
            parts.append(
                f'<text x="{x + slot // 2}" y="{height - bottom + 14}" text-anchor="middle" '
                f'font-size="10" fill="#555">{int(day["date"][8:])}</text>'
            )
    if with_mig:
        parts.append(
            f'<rect x="{left + 8}" y="{top}" width="10" height="10" fill="#2f6fb2"/>'
            f'<text x="{left + 22}" y="{top + 9}" font-size="10" fill="#555">whole GPUs, '
            f'GPU-hours</text><rect x="{left + 150}" y="{top}" width="10" height="10" '
            f'fill="#d9822b"/><text x="{left + 164}" y="{top + 9}" font-size="10" '
            'fill="#555">MIG slices, slice-hours</text>'
        )
    parts.append(
        f'<text x="12" y="{top + plot_h // 2}" font-size="10" fill="#555" '
        f'transform="rotate(-90 12 {top + plot_h // 2})" text-anchor="middle">'
        f"{'hours' if with_mig else 'GPU-hours'}</text>"
        "</svg>"
    )
    return "".join(parts)


_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;color:#1d232b;margin:32px auto;
max-width:860px;font-size:13px;line-height:1.4}
h1{font-size:22px;margin:0}h2{font-size:15px;margin:28px 0 8px;border-bottom:1px solid #ccd;
padding-bottom:4px}.head{display:flex;justify-content:space-between;align-items:flex-start;gap:24px}
.head h1{white-space:nowrap}table.meta{width:auto}
.muted,.sub{color:#5d6670;font-size:11px}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
.num{text-align:right;white-space:nowrap}tr.section th{background:#f3f5f8;font-size:12px}
.totals td{border:none;padding:3px 8px}.totals tr.grand td{font-weight:bold;font-size:15px;
border-top:2px solid #1d232b}.meta td{border:none;padding:1px 12px 1px 0}
code{font-size:11px;word-break:break-all}
.issuer{font-size:12px;margin:0 0 18px;color:#1d232b}
.draft{border:2px solid #b3261e;color:#b3261e;font-weight:bold;padding:8px 12px;margin:0 0 16px}
"""


def _issuer_html(s: dict[str, Any]) -> str:
    issuer = s.get("issuer")
    if not issuer:
        return ""
    lines = [
        f"<b>{escape(issuer['legal_name'])}</b>",
        *map(escape, issuer["address"]),
        f"Tax id {escape(issuer['tax_id'])}",
    ]
    if issuer.get("contact"):
        lines.append(escape(issuer["contact"]))
    return '<div class="issuer">' + "<br>".join(lines) + "</div>"


def _dates_html(s: dict[str, Any]) -> str:
    """Number, issue and due date; a draft says it has none yet."""
    if "issuer" not in s:
        return ""
    if s.get("draft"):
        terms = s["payment_terms_days"]
        due = f"{terms} days from the issue date" if terms >= 0 else "not recorded yet"
        return (
            '<tr><td class="muted">Number</td><td>none: a draft is not issued</td></tr>'
            f'<tr><td class="muted">Payment terms</td><td>{due}</td></tr>'
        )
    return (
        f'<tr><td class="muted">Number</td><td><b>{escape(s["statement_number"])}</b></td></tr>'
        f'<tr><td class="muted">Issued</td><td>{escape(s["issue_date"])}</td></tr>'
        f'<tr><td class="muted">Due</td><td><b>{escape(s["due_date"])}</b> (net '
        f"{s['payment_terms_days']} days)</td></tr>"
    )


def render_html(statement: dict[str, Any], digest_sha256: str) -> bytes:
    s = statement
    cur = s["currency"]
    period = s["period"]["label"]
    tenant = s["tenant"]
    t = s["totals"]
    summary = s["usage_summary"]
    totals_rows = [
        ("GPU time", t["usage"]),
        ("Energy pass-through", t["energy"]),
        ("Minimum commitment true-up", t["commitment_true_up"]),
        ("SLA credits", t["sla_credits"]),
        ("Prior-period adjustments", t["prior_period_adjustments"]),
    ]
    if "subtotal" in t:
        totals_rows.append(("Subtotal", t["subtotal"]))
    for tax in s.get("taxes", []):
        totals_rows.append(
            (
                f"{tax['label']} on {_amount(tax['taxable'], cur)} (contract {tax['contract_id']})",
                tax["amount"],
            )
        )
    totals_html = "".join(
        f'<tr><td>{escape(name)}</td><td class="num">{escape(_amount(v, cur))}</td></tr>'
        for name, v in totals_rows
    ) + (
        f'<tr class="grand"><td>{total_label(s, "Total due")}</td>'
        f'<td class="num">{escape(_amount(t["total"], cur))}</td></tr>'
    )
    contracts_html = "".join(
        f"<tr><td>{escape(c['contract_id'])}</td><td>{c['term_start'][:10]} – "
        f"{c['term_end'][:10]} (end exclusive)"
        f'</td><td class="num">{c["committed_gpus"]:,}</td>'
        f'<td class="num">{escape(_amount(c["minimum_monthly_commitment"], cur))}</td>'
        f'<td class="num">{escape(c["energy_rate_per_kwh"] or "—")}</td>'
        f'<td class="num">{escape(c["sla_credit_multiplier"])}</td></tr>'
        for c in s["contracts"]
    )
    gpu_h = Decimal(summary["allocated_us"]) / US_PER_GPU_HOUR
    bad_h = Decimal(summary["unhealthy_us"]) / US_PER_GPU_HOUR
    draft = bool(s.get("draft"))
    allocated_text = (
        f"Allocated GPU time this period: {gpu_h:,.6f} GPU-h, of which unhealthy "
        f"{bad_h:,.6f} GPU-h."
    )
    chart_title = "GPU-hours per day (UTC)"
    if summary.get("mig_slice_allocated_us"):  # slice-hours are never added to GPU-hours
        whole_h = Decimal(summary["full_gpu_allocated_us"]) / US_PER_GPU_HOUR
        slice_h = Decimal(summary["mig_slice_allocated_us"]) / US_PER_GPU_HOUR
        equal_h = Decimal(summary["mig_gpu_equivalent_us"]) / US_PER_GPU_HOUR
        allocated_text = (
            f"Allocated this period: whole GPUs {whole_h:,.6f} GPU-h; MIG slices "
            f"{slice_h:,.6f} slice-hours, which count as {equal_h:,.6f} GPU-h towards "
            "committed GPUs (an &lt;N&gt;g slice is N/7 of its GPU). Of all allocated "
            f"time, unhealthy {bad_h:,.6f} hours."
        )
        chart_title = "Hours per day (UTC): whole GPUs and MIG slices"
    title = "DRAFT GPU usage statement" if draft else "GPU usage statement"
    banner = (
        f'<p class="draft">DRAFT as of {escape(s["draft_as_of"])}: not issued, and the '
        "amounts may still change. It has no digest and cannot be verified.</p>"
        if draft
        else ""
    )
    check = (
        "A draft has no digest: only the issued statement can be checked."
        if draft
        else f"The SHA-256 digest of the canonical JSON of this statement is "
        f"<code>{escape(digest_sha256)}</code>."
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title} {escape(s["statement_id"])}</title><style>{_CSS}</style></head>
<body>{banner}
{_issuer_html(s)}
<div class="head"><div><h1>{title}</h1>
<div class="muted">{escape(s["period"]["start"][:10])} to {escape(s["period"]["end"][:10])} \
(UTC, end exclusive)</div></div>
<table class="meta"><tr><td class="muted">Tenant</td><td><b>{escape(tenant["name"])}</b> \
({escape(tenant["tenant_id"])})</td></tr>
<tr><td class="muted">Statement</td><td>{escape(s["statement_id"])}</td></tr>
{_dates_html(s)}
<tr><td class="muted">Period</td><td>{escape(period)}</td></tr>
<tr><td class="muted">Currency</td><td>{escape(cur)}</td></tr></table></div>
<h2>Summary</h2>
<table class="totals">{totals_html}</table>
<p class="muted">{allocated_text}</p>
<h2>{chart_title}</h2>
{daily_chart_svg(s["daily_allocated_us"])}
<h2>Line items</h2>
{_lines_table(s["lines"], cur, period, s.get("adjusts"))}
{_minimums_html(s.get("minimum_commitments", []), cur)}
{_corrections_html(s.get("corrections", []))}
<h2>Contract terms</h2>
<table><thead><tr><th>Contract</th><th>Term</th><th class="num">Committed GPUs</th>
<th class="num">Minimum per month</th><th class="num">Energy rate / kWh</th>
<th class="num">SLA credit multiplier</th></tr></thead><tbody>{contracts_html}</tbody></table>
<h2>How to check this statement</h2>
<p class="muted">{escape(s["rounding"])} Quantities are exact integers in the JSON file \
(GPU-µs, mJ); GPU-hours and kWh are shown to 6 places. {check}</p>
</body></html>
"""
    return page.encode("utf-8")
