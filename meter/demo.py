"""``meter demo``: a simulated fleet through broker, Faust worker and ClickHouse, checked.

Starts the local stack (unless one is already up), migrates a fresh demo database,
publishes the fleet, lets a worker meter it, reads the totals back through the finance
view and prints them beside what the fleet emitted. Exit status 1 if any figure differs.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from agent.fleet import FleetSpec, spec_dict
from agent.totals import COUNTERS, per_tenant
from core.errors import ConfigError
from core.units import US_PER_DAY, US_PER_SECOND, gpu_hours, kwh
from meter.runner import WorkerProcess, publish_fleet
from stack import LocalStack
from streams.host.progress import wait_until_consumed
from streams.host.settings import WorkerSettings
from streams.host.topics import ensure_topics
from streams.processing.grains import US_PER_HOUR
from warehouse.client import ClickHouseSettings, Warehouse
from warehouse.migrate import migrate
from warehouse.totals import coarsen, differences, ledger_totals, rollup_totals

# The demo fleet runs in the last month that has closed for good, so its statements can be
# issued; the contract book of the demo tenants ships beside the billing code.
DEMO_PERIOD = "2026-10"
DEMO_START_US = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()) * US_PER_SECOND
CONTRACTS_EXAMPLE = Path(str(resources.files("billing").joinpath("contracts.example.json")))
ISSUER_EXAMPLE = Path(str(resources.files("billing").joinpath("issuer.example.json")))


@dataclass(frozen=True)
class DemoOptions:
    spec: FleetSpec
    database: str = "demo"
    partitions: int = 8
    keep_stack: bool = False
    timeout_s: float = 600.0
    statements_dir: Path = Path("statements")
    contracts: Path = CONTRACTS_EXAMPLE
    issuer: Path = ISSUER_EXAMPLE


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _hours(gpu_us: int) -> str:
    return f"{gpu_hours(gpu_us):,.6f}"


def _kwh(energy_mj: int) -> str:
    return f"{kwh(energy_mj):,.6f}"


def render_table(
    emitted: dict[str, dict[str, int]], stored: dict[str, dict[str, int]]
) -> list[str]:
    """Per-tenant GPU-hours and energy, fleet vs ClickHouse, exact decimals."""
    head = (
        f"{'tenant':<16} {'GPU-h emitted':>16} {'GPU-h in ClickHouse':>20} "
        f"{'kWh emitted':>16} {'kWh in ClickHouse':>18} {'samples':>9}  match"
    )
    lines = [head, "-" * len(head)]
    zero = dict.fromkeys((*COUNTERS, "sample_count"), 0)
    for tenant in sorted(emitted.keys() | stored.keys()):
        e, s = emitted.get(tenant, zero), stored.get(tenant, zero)
        lines.append(
            f"{tenant:<16} {_hours(e['allocated_us']):>16} {_hours(s['allocated_us']):>20} "
            f"{_kwh(e['energy_mj']):>16} {_kwh(s['energy_mj']):>18} {s['sample_count']:>9,}  "
            + ("yes" if e == s else "NO")
        )
    return lines


def run_demo(options: DemoOptions, folder: Path | None = None) -> int:
    stack = LocalStack(folder)
    already_up = stack.running() is not None
    say(f"starting the local stack in {stack.folder}" + (" (already up)" if already_up else ""))
    info = stack.up()
    shown = info.clickhouse_url_for(options.database, shown=True)
    say(f"broker {info.bootstrap}, ClickHouse {shown} (password in {info.password_path})")
    try:
        return _run(options, stack.folder, info.bootstrap, info.settings(options.database))
    finally:
        if not (already_up or options.keep_stack):
            say("stopping the local stack")
            stack.down()


# The demo recreates its database on every run; it drops only one it made (this table in
# it) or none: a typo in --database must not drop a database holding real usage.
DEMO_MARKER = "meter_demo_database"


def _refuse_a_database_not_the_demos(ch: ClickHouseSettings) -> None:
    catalog = Warehouse(replace(ch, database="system"))
    try:
        tables = {
            name
            for (name,) in catalog.execute(
                "SELECT name FROM system.tables WHERE database = %(d)s", {"d": ch.database}
            )
        }
    finally:
        catalog.close()
    if tables and DEMO_MARKER not in tables:
        raise ConfigError(
            f"database {ch.database!r} exists and was not made by meter demo ({len(tables)} "
            "tables): the demo drops and recreates its database, so pass another --database "
            "(default: demo)"
        )


def _run(options: DemoOptions, folder: Path, bootstrap: str, ch: ClickHouseSettings) -> int:
    spec = options.spec
    run_id = uuid.uuid4().hex[:8]
    _refuse_a_database_not_the_demos(ch)
    warehouse = Warehouse(ch)
    say(f"recreating database {ch.database!r} and applying migrations")
    warehouse.drop_database()
    applied = migrate(warehouse)
    warehouse.execute(f"CREATE TABLE IF NOT EXISTS {DEMO_MARKER} (made_at DateTime) ENGINE = Log")
    say(f"applied {len(applied)} migrations: {', '.join(m.name for m in applied)}")

    settings = WorkerSettings(
        bootstrap=bootstrap,
        topic=f"gpu-usage-{run_id}",
        app_id=f"gpu-meter-demo-{run_id}",
        partitions=options.partitions,
        clickhouse=ch,
        datadir=folder / "faust",
    )
    ensure_topics(bootstrap, {settings.topic: settings.partitions, settings.dlq_topic: 1})
    worker = WorkerProcess.start(settings, folder / f"worker-{run_id}.log")
    say(
        f"worker started (pid {worker.proc.pid}, log {worker.log_path}); on a first run it "
        "compiles its hot path before it reads (about a minute; cached on disk after)"
    )
    try:
        reports = spec.nodes * spec.reports_per_node
        say(
            f"publishing {reports:,} reports = {spec.samples:,} GPU samples "
            f"({spec.nodes} nodes x {spec.gpus_per_node} GPUs, {spec.tenants} tenants)"
        )
        started = time.monotonic()
        emitted, end_offsets = publish_fleet(
            spec,
            bootstrap,
            settings.topic,
            on_progress=lambda n: say(f"  published {n:,}/{reports:,} reports"),
        )
        say(f"published in {time.monotonic() - started:.1f} s, all acknowledged (acks=all)")
        last = [-1.0]

        def progress(done: int, target: int) -> None:
            if not worker.alive():
                raise RuntimeError(
                    f"worker exited ({worker.proc.returncode}); see {worker.log_path}"
                )
            if time.monotonic() - last[0] >= 2 or done == target:
                last[0] = time.monotonic()
                say(f"  worker has metered {done:,}/{target:,} reports")

        wait_until_consumed(
            bootstrap, settings.app_id, settings.topic, end_offsets, options.timeout_s, progress
        )
        say(f"pipeline drained in {time.monotonic() - started:.1f} s")
    finally:
        code = worker.stop()
        say(f"worker stopped (exit {code})")

    emitted_path = folder / "demo-emitted.json"
    emitted.write(emitted_path, {"spec": spec_dict(spec), "topic": settings.topic})
    stored = rollup_totals(warehouse)
    print()
    for line in render_table(emitted.per_tenant(), per_tenant(stored)):
        print(line)
    print()
    failed = False
    sides = [
        ("rollups", "minute", emitted.by_key, stored),
        ("ledger", "minute", emitted.by_key, ledger_totals(warehouse)),
    ]
    for grain, width in (("hour", US_PER_HOUR), ("day", US_PER_DAY), ("month", 0)):
        expected = coarsen(emitted.by_key, width)
        sides.append((f"{grain} rollups", grain, expected, rollup_totals(warehouse, grain)))
    for side, grain, expected, totals in sides:
        diffs = differences(expected, totals)
        if diffs:
            failed = True
            print(f"MISMATCH in the {side}: {len(diffs)} differences over {len(expected)} keys:")
            for d in diffs[:10]:
                print(f"  {d}")
        else:
            print(
                f"OK {side}: all {len(expected):,} (tenant, sku, cluster, {grain}) totals equal"
                " the fleet's, exactly (allocated/busy/unhealthy µs, energy mJ, sample counts)"
            )
    print(f"emitted totals: {emitted_path}")
    if failed:
        return 1
    return _bill(options, ch)


def _bill(options: DemoOptions, ch: ClickHouseSettings) -> int:
    """Contracts in, statements of the demo month out, then the books reconciled."""
    from billing import commands

    print()
    say(f"loading contracts from {options.contracts}")
    commands.load_contracts(ch, options.contracts)
    say(f"issuing the statements of {DEMO_PERIOD} into {options.statements_dir}/")
    # The simulated fleet covers only October's first half hour, and some tenants of the
    # example contracts have no usage: a real month would wait for both (billing/README.md).
    say("the fleet metered half an hour of the month: issuing with --force")
    code = commands.statements(
        ch, DEMO_PERIOD, options.statements_dir, None, options.issuer, force=True
    )
    print()
    say(f"reconciling {DEMO_PERIOD}")
    return max(code, commands.reconcile_period(ch, DEMO_PERIOD, None, "0.01", "0.01"))


def main_demo(options: DemoOptions, folder: Path | None) -> int:
    try:
        return run_demo(options, folder)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
