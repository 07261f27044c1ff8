"""``meter bench finance``: the finance interface on months of history, on both engines.

A synthetic history of exactly known usage (``bench/history.py``) is generated in the
warehouse tables, on the local ClickHouse 18.16 server and on current ClickHouse in
process (chdb). Then every SQL query of the README's "For finance" section runs as
written (on the server as the read-only ``finance`` user), repeatedly, and every answer is
checked against the generator's totals, exactly. On the server the month's statements are
composed (``meter statements --dry-run``, repeatedly), then issued once, and ``meter
reconcile`` runs for the month, both checked too. The same is done on one month of history,
so the output shows whether latency grows with history (it should not).
"""

from __future__ import annotations

import calendar
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import history
from bench.history import Shape, decimal_hours
from billing.issue import run_statements
from billing.issuer import load_issuer_file
from billing.rating import Period, UsageRow, rate_period
from billing.reconcile import reconcile
from billing.statement import verify_json_file
from billing.store import days_to_split, store_contracts
from core.errors import ConfigError
from core.units import US_PER_DAY, US_PER_MINUTE, US_PER_SECOND
from meter.demo import ISSUER_EXAMPLE
from stack import LocalStack
from stack.clickhouse import FINANCE_PASSWORD, FINANCE_USER
from warehouse import compaction
from warehouse.client import Warehouse
from warehouse.migrate import available

README = Path(__file__).parents[1] / "README.md"
ISSUER = load_issuer_file(ISSUER_EXAMPLE)
MONTH = "2026-10"
QUERY_RUNS = 20
QUERY_MIN_S = 2.0  # a fast query is repeated until it has run this long
MAX_RUNS = 400
COMMAND_RUNS = 3
SLOW_S = 10.0  # a query slower than this once is not repeated
QUERY_TIMEOUT_S = 180  # a README query still running after this is reported as timed out


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def finance_queries() -> list[str]:
    text = README.read_text("utf-8")
    section = text.split("## For finance", 1)[1].split("\n## ", 1)[0]
    return [q.strip().rstrip(";") for q in re.findall(r"```sql\n(.*?)```", section, flags=re.S)]


class Server:
    """The local server over HTTP, as a given user."""

    def __init__(
        self,
        port: int,
        database: str,
        user: str = "default",
        password: str = "",
        writer_password: str = "",
    ) -> None:
        self.port, self.database, self.user, self.password = port, database, user, password
        self.writer_password = writer_password if user != "default" else password

    def __call__(self, sql: str, timeout_s: float = 900) -> str:
        params = {"database": self.database, "user": self.user, "password": self.password}
        url = f"http://127.0.0.1:{self.port}/?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, data=sql.encode(), timeout=timeout_s) as response:
                return response.read().decode()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{error.read().decode()[:500]} in: {sql[:300]}") from error
        except TimeoutError:
            # 18.16 goes on with a query whose HTTP client left: stop it (as the writer).
            writer = Server(self.port, self.database, password=self.writer_password)
            writer(f"KILL QUERY WHERE user = '{self.user}' SYNC")
            raise

    def query(self, sql: str) -> str:
        return self(sql, QUERY_TIMEOUT_S)


class Embedded:
    """Current ClickHouse in process (chdb)."""

    def __init__(self, folder: Path, database: str) -> None:
        from chdb import session as chdb_session

        self.session = chdb_session.Session(str(folder))
        self.session.query(f"CREATE DATABASE IF NOT EXISTS {database}")
        self.session.query(f"USE {database}")

    def __call__(self, sql: str) -> str:
        return str(self.session.query(sql, "TSV"))

    def query(self, sql: str) -> str:
        try:
            return self(sql)
        except Exception as error:  # chdb raises its own error types
            if "TIMEOUT_EXCEEDED" in str(error) or "Timeout exceeded" in str(error):
                raise TimeoutError(str(error)[:200]) from error
            raise

    def limit_queries(self) -> None:
        self.session.query(f"SET max_execution_time = {QUERY_TIMEOUT_S}")

    def close(self) -> None:
        self.session.close()


class _SqlWarehouse:
    """Enough of :class:`Warehouse` for ``store_contracts`` on an engine without the
    driver: its rows become literal VALUES."""

    def __init__(self, run: Callable[[str], str]) -> None:
        self.run = run

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        text = self.run(sql).strip()
        return [(int(text) if text.isdigit() else None,)]

    def insert(self, table: str, columns: Any, rows: Any) -> int:
        def literal(v: Any) -> str:
            if isinstance(v, str):
                return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
            if hasattr(v, "strftime"):
                return f"toDateTime('{v:%Y-%m-%d %H:%M:%S}', 'UTC')"
            return str(v)

        values = ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)
        self.run(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}")
        return len(rows)


def timed(call: Callable[[], Any], runs: int, min_s: float = 0.0) -> tuple[list[float], Any]:
    """At least ``runs`` calls, and more until ``min_s`` has passed (at most ``MAX_RUNS``):
    a query of a few milliseconds is timed often enough for its median to mean something
    on a shared machine."""
    times, result = [], None
    while len(times) < runs or (sum(times) < min_s and len(times) < MAX_RUNS):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
        if times[-1] > SLOW_S:
            break
    return times, result


def settle_merges(warehouse: Warehouse, limit_s: float = 600.0) -> None:
    """Until no merge has run for three checks a second apart (at most ``limit_s``)."""
    quiet, deadline = 0, time.monotonic() + limit_s
    while quiet < 3 and time.monotonic() < deadline:
        time.sleep(1)
        running = int(warehouse.execute("SELECT count() FROM system.merges")[0][0])
        quiet = quiet + 1 if running == 0 else 0


def figures(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "runs": len(times),
        "p50_s": round(statistics.median(ordered), 5),
        "p99_s": round(p99, 5),
        "max_s": round(ordered[-1], 5),
    }


def prepare(run: Callable[[str], str], database: str, shape: Shape, contracts_into: Any) -> None:
    for migration in available():
        for statement in migration.statements(database):
            run(statement)
    started = time.monotonic()
    history.build(run, shape, say)
    store_contracts(
        contracts_into, history.contract_book(shape), "generated", clock=lambda: history.HISTORY_END
    )
    say(f"history of {shape.months} month(s) built in {time.monotonic() - started:.0f} s")


def run_bench(shape: Shape, folder: Path | None, engines: tuple[str, ...]) -> dict[str, Any]:
    folder = folder or Path(tempfile.mkdtemp(prefix="meter-finance-"))
    folder.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(folder / "stack")
    info = stack.up() if "server" in engines else None
    result: dict[str, Any] = {"shape": shape.__dict__, "month": MONTH, "histories": {}}
    try:
        for months in sorted({shape.months, 1}, reverse=True):
            sized = Shape(months, shape.tenants, shape.skus, shape.clusters, shape.partitions)
            result["histories"][f"{months}m"] = one_history(sized, folder, info, stack, engines)
    finally:
        if info is not None:
            stack.down()
    result["growth"] = growth(result["histories"], shape.months)
    result["exact"] = all(
        check["exact"]
        for h in result["histories"].values()
        for engine in h.values()
        for check in engine.values()
    )
    return result


def one_history(
    shape: Shape, folder: Path, info: Any, stack: LocalStack, engines: tuple[str, ...]
) -> dict[str, Any]:
    expected = history.expected_totals(shape)
    out: dict[str, Any] = {}
    database = f"finance_{shape.months}m_{uuid.uuid4().hex[:6]}"
    if "server" in engines:
        say(f"server: building {shape.months} month(s) of history in {database}")
        settings = info.settings(database)
        warehouse = Warehouse(settings)
        warehouse.ensure_database()
        stack.allow_finance(database)
        writer = Server(info.clickhouse_http_port, database, password=info.clickhouse_password)
        prepare(writer, database, shape, warehouse)
        # The bulk load leaves a backlog of merges that grows with the history (a live
        # warehouse merges as it goes): timed meanwhile, a longer history's queries would
        # share the cores with its merges.
        say("server: waiting for the load's merges to finish")
        settle_merges(warehouse)
        commands = bench_commands(warehouse, shape, expected, folder / database)
        finance = Server(
            info.clickhouse_http_port,
            database,
            FINANCE_USER,
            FINANCE_PASSWORD,
            info.clickhouse_password,
        )
        out["server"] = {**bench_queries(finance, shape, expected, issued=True), **commands}
        warehouse.drop_database()
        warehouse.close()
    if "chdb" in engines:
        say(f"chdb: building {shape.months} month(s) of history")
        embedded = Embedded(folder / f"chdb-{database}", database)
        prepare(embedded, database, shape, _SqlWarehouse(embedded))
        say("chdb: waiting for the load's merges to finish")
        settle_merges(_SqlWarehouse(embedded))  # type: ignore[arg-type]
        embedded.limit_queries()
        out["chdb"] = bench_queries(embedded, shape, expected, issued=False)
        embedded.close()
    return out


def bench_queries(
    run: Callable[[str], str], shape: Shape, expected: history.Expected, issued: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, sql in enumerate(finance_queries(), start=1):
        name = f"query_{n}: " + " ".join(sql.split())[:70]
        try:
            times, text = timed(lambda sql=sql: run.query(sql), QUERY_RUNS, QUERY_MIN_S)  # type: ignore[attr-defined]
        except TimeoutError:
            out[name] = {
                "runs": 1,
                "p50_s": None,
                "p99_s": None,
                "timed_out_after_s": QUERY_TIMEOUT_S,
                "exact": False,
            }
            say(f"  {name}: timed out after {QUERY_TIMEOUT_S} s")
            continue
        rows = [tuple(line.split("\t")) for line in text.splitlines()]
        problem = check_query(sql, rows, shape, expected, issued)
        out[name] = {
            **figures(times),
            "rows": len(rows),
            "exact": problem is None,
            **({"problem": problem} if problem else {}),
        }
        say(f"  {name}: p50 {out[name]['p50_s']} s, exact {problem is None}")
    return out


# Checks of the README's queries, by the view each reads ------------------------------


def _tenant(shape: Shape, name: str) -> int:
    return shape.tenant_ids.index(name)


def _month_days(shape: Shape, month: str = MONTH) -> list[int]:
    period = Period.parse(month)
    return [d for d in shape.days() if period.start_us <= d < period.end_us]


def _sum(expected: history.Expected, counter: str, t: int, days: list[int]) -> int:
    return int(sum(expected.by_day[counter][t, expected.day_index(d)] for d in days))


def check_query(
    sql: str, rows: list[tuple[str, ...]], shape: Shape, expected: history.Expected, issued: bool
) -> str | None:
    flat = " ".join(sql.split())
    for marker, check in _CHECKS:
        if marker in flat:
            try:
                return check(rows, shape, expected, issued)
            except (ValueError, IndexError, KeyError) as error:
                return f"unreadable answer: {error!r}"
    return "no check for this query"


def _check_by_day(rows, shape, expected, issued) -> str | None:
    want = {}
    for t, tenant in enumerate(shape.tenant_ids):
        for sku in shape.sku_names:
            for d in _month_days(shape):
                i = expected.day_index(d)
                hours = decimal_hours(int(expected.by_day["allocated_us"][t, i]))
                kwh = decimal_hours(int(expected.by_day["energy_mj"][t, i]))
                day = time.strftime("%Y-%m-%d", time.gmtime(d // US_PER_SECOND))
                want[(tenant, sku, day)] = (hours * shape.clusters, kwh * shape.clusters)
    got = {(r[0], r[1], r[2]): (Decimal(r[3]), Decimal(r[4])) for r in rows}
    return None if got == want else f"{len(got)} rows, {len(want)} expected; differ"


def _check_by_hour(rows, shape, expected, issued) -> str | None:
    # One tenant, one day: per (sku, cluster, hour) as the formula gives it.
    t = _tenant(shape, "aurora-labs")
    day_us = Period.parse(MONTH).start_us  # the README's day: October 1st
    sums = history.minute_sums(shape, day_us // US_PER_MINUTE, 1440)
    late = history.late_mask(shape, day_us // US_PER_MINUTE, 1440)
    late_us = late[:, t, :].sum(axis=0) * history.LATE_US
    per_minute = sums["allocated_us"][:, t, :].sum(axis=0) + late_us
    hours = [
        (day_us // US_PER_SECOND + 3600 * h, int(per_minute[60 * h : 60 * h + 60].sum()))
        for h in range(24)
    ]
    keys = [(sku, c) for sku in shape.sku_names for c in shape.cluster_names]
    want = sorted((sku, at, used) for sku, _ in keys for at, used in hours)
    got = sorted((r[1], _epoch(r[2]), int(r[3])) for r in rows)
    hours_ok = all(Decimal(r[4]) == decimal_hours(int(r[3])) for r in rows)
    return None if got == want and hours_ok else f"{len(got)} rows vs {len(want)}; differ"


def _epoch(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def _check_position(rows, shape, expected, issued) -> str | None:
    book = history.contract_book(shape)
    days = _month_days(shape)
    want = {}
    for t, tenant in enumerate(shape.tenant_ids):
        (contract,) = book.contracts_of(tenant, days[0], days[-1] + US_PER_DAY)
        per_key = _sum(expected, "allocated_us", t, days)
        sevenths = sum(
            per_key * shape.clusters * (3 if "-MIG-3g" in sku else 7) for sku in shape.sku_names
        )
        used = sevenths // 7
        committed = contract.committed_gpus * len(days) * US_PER_DAY
        want[tenant] = (
            contract.contract_id,
            str(contract.committed_gpus),
            decimal_hours(committed),
            decimal_hours(used),
            decimal_hours(max(used - committed, 0)),
            decimal_hours(max(committed - used, 0)),
            contract.minimum_monthly_commitment,
            contract.currency,
        )
    got = {
        r[0]: (
            r[1],
            r[2],
            Decimal(r[3]),
            Decimal(r[4]),
            Decimal(r[5]),
            Decimal(r[6]),
            Decimal(r[7]),
            r[8],
        )
        for r in rows
    }
    return None if got == want else "positions differ"


def _check_unhealthy(rows, shape, expected, issued) -> str | None:
    days = _month_days(shape)
    credited = _credits(shape, expected) if issued else {}
    want = {}
    for t, tenant in enumerate(shape.tenant_ids):
        for sku in shape.sku_names:
            un = _sum(expected, "unhealthy_us", t, days) * shape.clusters
            alloc = _sum(expected, "allocated_us", t, days) * shape.clusters
            pct = (Decimal(un) * 100 / alloc).quantize(Decimal("1e-9"), rounding="ROUND_DOWN")
            want[(tenant, sku)] = (decimal_hours(un), pct, credited.get((tenant, sku), Decimal(0)))
    got = {(r[0], r[1]): (Decimal(r[2]), Decimal(r[3]), Decimal(r[4])) for r in rows}
    return None if got == want else "unhealthy or credits differ"


def _expected_usage(shape: Shape, expected: history.Expected, t: int, month: str) -> list[UsageRow]:
    """The tenant's usage of ``month`` as statements read it: per day, and per minute on
    the days a rate changes inside."""
    period = Period.parse(month)
    book = history.contract_book(shape)
    fine = days_to_split(
        book.contracts_of(shape.tenant_ids[t], period.start_us, period.end_us), period
    )
    rows = []
    for d in _month_days(shape, month):
        i = expected.day_index(d)
        if d in fine:
            sums = history.minute_sums(shape, d // US_PER_MINUTE, 1440)
            late = history.late_mask(shape, d // US_PER_MINUTE, 1440)[:, t, :].sum(axis=0)
            per = {
                c: sums[c][:, t, :].sum(axis=0)
                for c in ("allocated_us", "unhealthy_us", "energy_mj")
            }
            per["allocated_us"] = per["allocated_us"] + late * history.LATE_US
            per["energy_mj"] = per["energy_mj"] + late * history.LATE_ENERGY_MJ
            points = [(d + m * US_PER_MINUTE, m) for m in range(1440)]
        else:
            per = {
                c: expected.by_day[c][t, i : i + 1]
                for c in ("allocated_us", "unhealthy_us", "energy_mj")
            }
            points = [(d, 0)]
        for sku in shape.sku_names:
            for cluster in shape.cluster_names:
                rows.extend(
                    UsageRow(
                        sku,
                        cluster,
                        at,
                        int(per["allocated_us"][j]),
                        int(per["unhealthy_us"][j]),
                        int(per["energy_mj"][j]),
                    )
                    for at, j in points
                )
    return rows


def expected_lines(shape: Shape, expected: history.Expected, t: int, month: str) -> list:
    period = Period.parse(month)
    book = history.contract_book(shape)
    contracts = book.contracts_of(shape.tenant_ids[t], period.start_us, period.end_us)
    lines, unrated = rate_period(contracts, period, _expected_usage(shape, expected, t, month))
    assert not unrated
    return lines


def _credits(shape: Shape, expected: history.Expected) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for t, tenant in enumerate(shape.tenant_ids):
        for ln in expected_lines(shape, expected, t, MONTH):
            if ln.kind == "sla_credit":
                out[(tenant, ln.sku)] = out.get((tenant, ln.sku), Decimal(0)) + ln.amount
    return out


def _check_ledger_view(rows, shape, expected, issued) -> str | None:
    # node_id, seq, gpu_uuid, job_id, tick_start_us, tick_end_us, allocated_us, busy_us,
    # unhealthy_us, energy_mj, late — each must be what the formula gave that GPU then.
    return _check_samples(
        [(r[0], r[2], int(r[4]), int(r[6]), int(r[7]), r[10]) for r in rows], shape
    )


def _check_ledger_table(rows, shape, expected, issued) -> str | None:
    # node_id, seq, gpu, job, tick_start, allocated_us, busy_us
    return _check_samples(
        [(r[0], r[2], int(r[4]), int(r[5]), int(r[6]), None) for r in rows], shape
    )


def _check_samples(samples, shape: Shape) -> str | None:
    if len(samples) != 20:
        return f"{len(samples)} samples, 20 expected"
    for node, gpu, tick_start, alloc, busy, late in samples:
        am = tick_start // US_PER_MINUTE
        if node.startswith("late-"):
            ok = alloc == history.LATE_US and busy == history.LATE_US // 2 and late in (None, "1")
        else:
            p = int(node.split("-")[2])
            k = int(gpu.rsplit("-", 1)[1])
            want = history.HALF_US if (am + k + p) % 13 == 0 else history.FULL_US
            ok = alloc == want and busy == want // 2 and late in (None, "0")
        if not ok:
            return f"sample {node} {gpu} {tick_start}: {alloc}/{busy} is not the generated usage"
    return None


def _check_issued(rows, shape, expected, issued) -> str | None:
    if not issued:
        return None if not rows else "statements found where none were issued"
    # The README asks for the benchmarked month's statements: one per tenant.
    got = sorted((r[0], r[1]) for r in rows)
    return None if got == [(t, MONTH) for t in sorted(shape.tenant_ids)] else "statements differ"


def _months(shape: Shape) -> list[Period]:
    """The history's months, the benchmarked one first."""
    month, out = Period.parse(shape.start.strftime("%Y-%m")), []
    for _ in range(shape.months):
        out.append(month)
        month = month.next()
    return out[::-1]


def _check_billed(rows, shape, expected, issued) -> str | None:
    if not issued:
        return None if not rows else "billed lines found where none were issued"
    want: dict[tuple[str, str, str], Decimal] = {}
    for t, tenant in enumerate(shape.tenant_ids):
        for month in _months(shape):
            for ln in expected_lines(shape, expected, t, month.label):
                if ln.for_period != MONTH:  # the README asks about the benchmarked month
                    continue
                key = (tenant, ln.for_period, ln.kind)
                want[key] = want.get(key, Decimal(0)) + ln.amount
    got = {(r[0], r[1], r[2]): Decimal(r[3]) for r in rows}
    return None if got == want else "billed amounts differ"


def _check_rejected(rows, shape, expected, issued) -> str | None:
    got = {r[0]: int(r[1]) for r in rows}
    return None if got == history.REJECTED else "rejections differ"


def _check_gaps(rows, shape, expected, issued) -> str | None:
    return (
        None if len(rows) == history.OPEN_GAPS and all(r[4] == "3" for r in rows) else "gaps differ"
    )


_CHECKS: list[tuple[str, Callable[..., str | None]]] = [
    ("FROM usage_by_day", _check_by_day),
    ("FROM usage_by_hour", _check_by_hour),
    ("FROM contract_position_by_month", _check_position),
    ("FROM unhealthy_by_month", _check_unhealthy),
    ("FROM usage_ledger_holdings", _check_ledger_table),
    ("FROM usage_ledger ", _check_ledger_view),
    ("FROM issued_statements", _check_issued),
    ("FROM billed_by_period WHERE for_period", _check_billed),
    ("FROM rejected_by_reason", _check_rejected),
    ("FROM open_seq_gaps", _check_gaps),
]


# meter statements and meter reconcile, on the server ------------------------------------


def bench_commands(
    warehouse: Warehouse, shape: Shape, expected: history.Expected, out: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    clock = lambda: history.HISTORY_END  # noqa: E731
    # The history's earlier months as the runbook leaves them: issued, then compacted once
    # nothing more would arrive for them (README, "Run it against your own …", step 6).
    for month in reversed(_months(shape)[1:]):
        run_statements(warehouse, month.label, out, clock=clock, issuer=ISSUER)
        started = time.perf_counter()
        merged = _compact(warehouse, month)
        say(
            f"  {month.label}: issued, {len(merged)} partitions compacted in "
            f"{time.perf_counter() - started:.0f} s"
        )
    times, outcomes = timed(
        lambda: run_statements(warehouse, MONTH, out, clock=clock, dry_run=True, issuer=ISSUER),
        COMMAND_RUNS,
    )
    would = [o for o in outcomes if o.status == "would issue"]
    results[f"meter statements --dry-run --period {MONTH}"] = {
        **figures(times),
        "exact": len(would) == shape.tenants,
    }
    started = time.perf_counter()
    issued = run_statements(warehouse, MONTH, out, clock=clock, issuer=ISSUER)
    seconds = time.perf_counter() - started
    problem = _check_statements(issued, shape, expected)
    results[f"meter statements --period {MONTH}"] = {
        **figures([seconds]),
        "exact": problem is None,
        **({"problem": problem} if problem else {}),
    }
    say(f"  statements: issued {len(issued)} in {seconds:.1f} s, exact {problem is None}")
    # A closed month: its merges done, as they are once the month is old. First a full
    # comparison day by day (--recheck, the month not compacted); then `meter compact` and
    # the comparison in one pass; then the month again over the same table parts, answered
    # from the recorded pass.
    period = Period.parse(MONTH)
    settle_merges(warehouse)
    runs: list[tuple[str, list[float], Any]] = []
    cold, report = timed(lambda: reconcile(warehouse, MONTH, recheck=True), 1)
    runs.append((f"meter reconcile --period {MONTH} --recheck (not compacted)", cold, report))
    started = time.perf_counter()
    merged = _compact(warehouse, period)
    results[f"meter compact --period {MONTH}"] = {
        **figures([time.perf_counter() - started]),
        "partitions": len(merged),
        "exact": True,  # it changes no total: the reconcile runs after it check them
    }
    settle_merges(warehouse)
    compacted, reports = timed(lambda: reconcile(warehouse, MONTH, recheck=True), COMMAND_RUNS)
    runs.append((f"meter reconcile --period {MONTH} --recheck (compacted)", compacted, reports))
    again, reports = timed(lambda: reconcile(warehouse, MONTH), COMMAND_RUNS)
    runs.append((f"meter reconcile --period {MONTH} (again, data unchanged)", again, reports))
    for name, times, last in runs:
        text = "\n".join(last.lines)
        ok = last.ledger_ok and f"FAIL {history.OPEN_GAPS} open gaps" in text
        remembered = "compared earlier" in text
        one_pass = "compared day by day" not in text
        results[name] = {
            **figures(times),
            "exact": ok,
            "remembered": remembered,
            "one_pass": one_pass,
            **({} if ok else {"problem": text[-2000:]}),
        }
        say(f"  {name}: p50 {results[name]['p50_s']} s, exact {ok}, remembered {remembered}")
    return results


def _compact(warehouse: Warehouse, month: Period) -> list[str]:
    """``meter compact --period`` of ``month``: what it merged."""
    return compaction.compact(
        warehouse, compaction.partitions_read(month.start_us, month.end_us), progress=say
    )


def _check_statements(outcomes, shape: Shape, expected: history.Expected) -> str | None:
    if sorted(o.tenant_id for o in outcomes) != sorted(shape.tenant_ids):
        return "not every tenant got a statement"
    for o in outcomes:
        if o.status != "issued":
            return f"{o.tenant_id}: {o.status} {o.detail}"
        document = json.loads(o.files[0].read_bytes())
        if verify_json_file(o.files[0].read_bytes()) != o.digest_sha256:
            return f"{o.tenant_id}: digest does not verify"
        t = _tenant(shape, o.tenant_id)
        want = sorted(
            (ln.kind, ln.for_period, ln.sku, ln.cluster, ln.quantity, ln.amount)
            for ln in expected_lines(shape, expected, t, MONTH)
        )
        got = sorted(
            (
                ln["kind"],
                ln["for_period"],
                ln["sku"],
                ln["cluster"],
                ln["quantity"],
                Decimal(ln["amount"]),
            )
            for ln in document["statement"]["lines"]
        )
        if got != want:
            return f"{o.tenant_id}: lines differ from the hand-rated usage"
    return None


def growth(histories: dict[str, Any], months: int) -> dict[str, Any]:
    """Each figure at ``months`` over the same at 1 month (p50 and p99)."""
    long, short = histories.get(f"{months}m"), histories.get("1m")
    if months == 1 or long is None or short is None:
        return {}
    out: dict[str, Any] = {}
    for engine, checks in long.items():
        for name, figure in checks.items():
            base = short.get(engine, {}).get(name)
            if base and base.get("p50_s") and figure.get("p50_s"):
                out[f"{engine} {name}"] = {
                    "p50_ratio": round(figure["p50_s"] / max(base["p50_s"], 1e-6), 2),
                    "p99_ratio": round(figure["p99_s"] / max(base["p99_s"], 1e-6), 2),
                }
    return out


ENGINES = ("server", "chdb")


def parse_engines(text: str) -> tuple[str, ...]:
    """``server``, ``chdb``, ``both`` or ``server,chdb``, in a fixed order."""
    named = [e.strip() for e in text.split(",") if e.strip()]
    named = list(ENGINES) if named == ["both"] else named
    unknown = [e for e in named if e not in ENGINES]
    if unknown or not named:
        raise ConfigError(f"--engines {text!r}: give server, chdb or both")
    return tuple(e for e in ENGINES if e in named)


def main_finance(args: Any) -> int:
    shape = Shape(args.months, args.tenants, args.skus, args.clusters, args.partitions)
    engines = parse_engines(args.engines)
    result = run_bench(shape, Path(args.folder) if args.folder else None, engines)
    text = json.dumps(result, indent=None if args.json else 2, default=str)
    print(text)
    return 0 if result["exact"] else 1
