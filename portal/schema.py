"""The API's response shapes: what FastAPI publishes in the OpenAPI description and what
every response is validated against (extra fields are refused, so nothing leaves that
the description does not show)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

Digits = Field(pattern=r"^-?[0-9]+$")
Hours = Field(pattern=r"^-?[0-9]+\.[0-9]{9}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(Strict):
    detail: str


class TenantRef(Strict):
    tenant_id: str
    name: str


class Tenants(Strict):
    tenants: list[TenantRef]


class Fresh(Strict):
    usage_through: str | None = Field(description="UTC instant every partition has passed")
    age_s: int | None
    stale: bool
    stale_after_s: int


class UsageTotals(Strict):
    """Whole GPUs; MIG slices apart (``mig_slice_*``), never added to GPU-hours."""

    allocated_us: str = Digits
    allocated_gpu_hours: str = Hours
    mig_slice_us: str = Digits
    mig_slice_hours: str = Hours
    mig_slice_billable_us: str = Digits
    busy_us: str = Digits
    unhealthy_us: str = Digits
    unhealthy_gpu_hours: str = Hours
    energy_mj: str = Digits
    energy_kwh: str = Hours
    measured_us: str = Digits
    measured_gpu_hours: str = Hours
    corrections_us: str = Digits
    corrections_gpu_hours: str = Hours
    billable_us: str = Digits
    billable_gpu_hours: str = Hours
    credited_unhealthy_us: str = Digits
    credited_unhealthy_gpu_hours: str = Hours


class Daily(Strict):
    date: str
    allocated_us: str = Digits
    allocated_gpu_hours: str = Hours
    mig_slice_us: str = Digits


class DayRow(Strict):
    day: str
    sku: str
    cluster: str
    allocated_us: str = Digits
    allocated_gpu_hours: str = Hours
    busy_us: str = Digits
    unhealthy_us: str = Digits
    energy_mj: str = Digits


class BillableRow(Strict):
    sku: str
    cluster: str
    measured_us: str = Digits
    corrections_us: str = Digits
    billable_us: str = Digits
    credited_unhealthy_us: str = Digits
    energy_mj: str = Digits
    billable_gpu_hours: str = Hours


class Usage(Fresh):
    tenant_id: str
    month: str
    totals: UsageTotals
    daily: list[Daily]
    by_day: list[DayRow]
    billable: list[BillableRow]


class ContractPosition(Strict):
    contract_id: str
    currency: str
    committed_gpus: int
    committed_gpu_us: str = Digits
    committed_gpu_hours: str = Hours
    used_gpu_us: str = Digits
    used_gpu_hours: str = Hours
    used_fraction: str
    mig_slice_us: str = Digits
    elapsed_fraction: str
    projected_gpu_us: str = Digits
    projected_gpu_hours: str = Hours
    projected_overage_gpu_hours: str = Hours
    projected_shortfall_gpu_hours: str = Hours
    outlook: str
    minimum_monthly_commitment: str


class Position(Fresh):
    tenant_id: str
    month: str
    rule: str
    contracts: list[ContractPosition]


class Adjustment(Strict):
    line_no: int
    for_period: str
    kind: str
    sku: str
    amount: str
    adjusts_statement: str
    correction: str | None = None


class CorrectionRef(Strict):
    correction_id: str
    kind: str
    reason: str
    ticket: str


class Downloads(Strict):
    json_: str = Field(alias="json")
    csv: str
    html: str


class IssuedStatement(Strict):
    period: str
    statement_id: str
    statement_number: str
    currency: str
    total: str
    issued_at: str
    digest_sha256: str
    how_to_check: str
    adjustments: list[Adjustment]
    corrections: list[CorrectionRef]
    downloads: Downloads


class Statements(Strict):
    tenant_id: str
    statements: list[IssuedStatement]


class Draft(Strict):
    tenant_id: str
    month: str
    draft: bool
    drawn_at: str
    total: str
    currency: str
    statement: dict


class Gap(Strict):
    node_id: str
    boot_id: str
    first_missing_seq: str = Digits
    last_missing_seq: str = Digits
    missing_reports: str = Digits
    first_seen: str
    open_for_s: int


class Gaps(Strict):
    tenant_id: str
    complete: bool
    meaning: str
    open_gaps: list[Gap]
