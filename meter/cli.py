"""The ``meter`` command. Every flag also reads an environment variable (shown in --help).

Logging is configured here, once, at the entry point.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.errors import ConfigError, MeterError
from core.logs import LOG_FORMATS
from core.units import US_PER_SECOND


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"METER_{name}", default)


def _flag(parser: argparse.ArgumentParser, flag: str, env: str, **kwargs: object) -> None:
    built_in = kwargs.pop("default", None)
    default = _env(env, built_in)  # type: ignore[arg-type]
    help_text = str(kwargs.pop("help", ""))
    shown = f" (default: {built_in})" if built_in not in (None, "") else ""
    parser.add_argument(
        flag, default=default, help=f"{help_text}{shown} [env METER_{env}]", **kwargs
    )  # type: ignore[arg-type]


def _fleet_flags(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "--nodes", "FLEET_NODES", default="100", type=int, help="GPU nodes")
    _flag(parser, "--gpus", "FLEET_GPUS", default="8", type=int, help="GPUs per node")
    _flag(parser, "--tenants", "FLEET_TENANTS", default="3", type=int, help="tenants")
    _flag(parser, "--reports", "FLEET_REPORTS", default="30", type=int, help="reports per node")
    _flag(parser, "--seed", "FLEET_SEED", default="7", type=int, help="fleet seed")


def _fleet_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from agent.fleet import FleetSpec

    return FleetSpec(
        nodes=args.nodes,
        gpus_per_node=args.gpus,
        tenants=args.tenants,
        reports_per_node=args.reports,
        seed=args.seed,
    )


def _stack_dir(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "--stack-dir", "STACK_DIR", default=".stack", help="folder of the local stack")


_DESCRIPTION = """GPU usage metering: node agents, the stream worker, the ClickHouse warehouse,
statements and reconciliation. Every flag also reads an environment variable, named in
each command's --help (meter worker --help)."""
_EXAMPLES = """examples:
  meter demo                                    # a simulated fleet end to end, checked
  meter stack up                                # local broker and ClickHouse, URLs printed
  meter migrate --clickhouse-url clickhouse://default@127.0.0.1:9000/gpu_meter?http_port=8123
  meter worker --bootstrap kafka:9092 --clickhouse-url URL --metrics-port 9108
  meter statements --period 2026-10 --issuer issuer.json --dry-run
  meter reconcile --period 2026-10"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpu-meter")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _global_flags(parser: argparse.ArgumentParser, level: object, debug: object) -> None:
    parser.add_argument(
        "--log-level",
        default=level,
        type=str.upper,
        choices=_LOG_LEVELS,
        help="log level [env METER_LOG_LEVEL]",
    )
    parser.add_argument(
        "--debug", action="store_true", default=debug, help="show the traceback of a failure"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meter",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_flags(parser, _env("LOG_LEVEL", "INFO"), False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # The same flags after the subcommand (meter status --debug); they win when given there.
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, argparse.SUPPRESS, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common], **k)  # type: ignore[method-assign]

    stack = sub.add_parser("stack", help="start/stop/inspect the local broker and ClickHouse")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument(
        "--replicated",
        action="store_true",
        help="the replicated shape instead: two brokers on S3 storage (SeaweedFS) behind "
        "HAProxy, ZooKeeper and two ClickHouse replicas, in <stack dir>-replicated",
    )
    _stack_dir(stack)

    mig = sub.add_parser("migrate", help="apply pending ClickHouse migrations")
    _warehouse_flags(mig, database=False)

    worker = sub.add_parser("worker", help="run the Faust stream processor")
    _flag(worker, "--bootstrap", "BOOTSTRAP", help="Kafka bootstrap host:port")
    _flag(worker, "--topic", "TOPIC", default="gpu-usage", help="usage report topic")
    _flag(
        worker,
        "--log-format",
        "LOG_FORMAT",
        default="auto",
        choices=LOG_FORMATS,
        help="json: one object per line; auto: text on a terminal, else json",
    )
    _flag(worker, "--dlq-topic", "DLQ_TOPIC", default="", help="dead-letter topic")
    _flag(worker, "--app-id", "APP_ID", default="gpu-meter", help="Faust app id / group")
    _flag(worker, "--partitions", "PARTITIONS", default="8", type=int, help="topic partitions")
    _flag(worker, "--clickhouse-url", "CLICKHOUSE_URL", help="clickhouse://host:port/db")
    _flag(
        worker,
        "--give-up-after-s",
        "GIVE_UP_AFTER_S",
        default="30",
        type=float,
        help="how long the start-up check waits for an unreachable ClickHouse",
    )
    _flag(worker, "--datadir", "DATADIR", default=".stack/faust", help="Faust data folder")
    _flag(
        worker,
        "--lateness-s",
        "LATENESS_S",
        default="600",
        type=float,
        help="event-time lateness bound, seconds",
    )
    _flag(
        worker,
        "--metrics-port",
        "METRICS_PORT",
        default=None,
        type=int,
        help="serve Prometheus /metrics on this port",
    )
    _flag(
        worker,
        "--batch-messages",
        "BATCH_MESSAGES",
        default="5000",
        type=int,
        help="most messages read, processed and written as one batch",
    )
    _flag(
        worker,
        "--replication-factor",
        "REPLICATION_FACTOR",
        default="1",
        type=int,
        help="copies of each topic the worker creates (3 on a production Kafka cluster; "
        "an existing topic keeps its own)",
    )
    _flag(
        worker,
        "--processing-threads",
        "PROCESSING_THREADS",
        default="2",
        type=int,
        help="partitions of a batch processed at once",
    )
    _flag(
        worker,
        "--snapshot-interval-s",
        "SNAPSHOT_INTERVAL_S",
        default="10",
        type=float,
        help="seconds between stores of a partition's whole state (each partition's first "
        "batch stores it too); after a crash up to about this much is read again",
    )
    _flag(
        worker,
        "--session-timeout-s",
        "SESSION_TIMEOUT_S",
        default="2",
        type=float,
        help="consumer group session timeout; heartbeats every quarter of it (Apache "
        "Kafka refuses less than its group.min.session.timeout.ms, 6 s by default)",
    )
    worker.add_argument(
        "--plain",
        action="store_true",
        default=_env("PLAIN") == "1",
        help="use the readable twin instead of the hot path [env METER_PLAIN=1]",
    )
    _flag(
        worker, "--metrics-host", "METRICS_HOST", default="127.0.0.1", help="address for /metrics"
    )
    _stack_dir(worker)

    status = sub.add_parser(
        "status", help="pipeline progress, lag, gaps, rejections and silent nodes"
    )
    _warehouse_flags(status)
    status.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        help="a worker's /metrics URL, for lag (repeat per worker)",
    )
    _flag(
        status,
        "--silent-after-s",
        "SILENT_AFTER_S",
        default="300",
        type=int,
        help="a node is silent when it stopped this long before the latest report",
    )
    status.add_argument("--json", action="store_true", help="print JSON")

    fleet = sub.add_parser("fleet", help="publish a simulated fleet; write what it emitted")
    _fleet_flags(fleet)
    _flag(fleet, "--bootstrap", "BOOTSTRAP", help="Kafka bootstrap host:port")
    _flag(fleet, "--topic", "TOPIC", default="gpu-usage", help="usage report topic")
    _flag(fleet, "--totals-out", "TOTALS_OUT", default="", help="JSON file for emitted totals")
    _stack_dir(fleet)

    bench = sub.add_parser("bench", help="benchmarks: hotpath (in process) or e2e")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    hot = bench_sub.add_parser("hotpath", help="hot path vs plain per-sample path, one core")
    hot.add_argument("--nodes", type=int, default=200)
    hot.add_argument("--reports", type=int, default=100, help="reports per node")
    hot.add_argument("--repeats", type=int, default=9)
    hot.add_argument("--cpu", type=int, default=0, help="core to pin to (-1: no pinning)")
    hot.add_argument("--json", action="store_true", help="last line: one JSON object")
    e2e = bench_sub.add_parser("e2e", help="fleet -> broker -> worker -> ClickHouse, measured")
    e2e.add_argument("--nodes", type=int, default=200)
    e2e.add_argument("--reports", type=int, default=1_250, help="reports per node (backlog)")
    e2e.add_argument("--partitions", type=int, default=4)
    e2e.add_argument(
        "--floor-seconds",
        type=float,
        default=20.0,
        help="how long the no-op and plain agents are measured",
    )
    e2e.add_argument("--batch-messages", type=int, default=5_000, help="the worker's batch")
    e2e.add_argument("--stack-dir", default="", help="stack folder (default: a fresh temp dir)")
    e2e.add_argument("--json", action="store_true", help="last line: one JSON object")
    fresh = bench_sub.add_parser(
        "freshness", help="steady fleet: broker ack -> usage visible to the portal, per report"
    )
    fresh.add_argument("--nodes", type=int, default=25_000, help="each reports once a minute")
    fresh.add_argument("--seconds", type=float, default=180.0, help="measured publishing")
    fresh.add_argument("--warmup-s", type=float, default=30.0, help="published, not measured")
    fresh.add_argument("--partitions", type=int, default=8)
    fresh.add_argument("--stack-dir", default="", help="stack folder (default: a fresh temp dir)")
    fresh.add_argument("--json", action="store_true", help="last line: one JSON object")
    soak = bench_sub.add_parser("soak", help="a worker under steady load, memory sampled")
    soak.add_argument("--seconds", type=float, default=600.0, help="how long to publish")
    soak.add_argument("--rate", type=float, default=1_500.0, help="messages per second")
    soak.add_argument("--nodes", type=int, default=200)
    soak.add_argument("--partitions", type=int, default=4)
    soak.add_argument("--stack-dir", default="", help="stack folder (default: a fresh temp dir)")
    soak.add_argument("--json", action="store_true", help="last line: one JSON object")

    fin = bench_sub.add_parser(
        "finance", help="README finance queries, statements, reconcile on months of history"
    )
    fin.add_argument("--months", type=int, default=3, help="months of history (also run: 1)")
    fin.add_argument("--tenants", type=int, default=20)
    fin.add_argument("--skus", type=int, default=4)
    fin.add_argument("--clusters", type=int, default=2)
    fin.add_argument("--partitions", type=int, default=8, help="source partitions")
    fin.add_argument(
        "--engines", default="both", help="server (18.16), chdb (current ClickHouse), or both"
    )
    fin.add_argument("--folder", default="", help="working folder (default: a fresh temp dir)")
    fin.add_argument("--json", action="store_true", help="one JSON object on one line")
    pb = bench_sub.add_parser(
        "portal", help="the portal's pages and API on the finance benchmark's history"
    )
    pb.add_argument("--months", type=int, default=3)
    pb.add_argument("--tenants", type=int, default=20)
    pb.add_argument("--skus", type=int, default=4)
    pb.add_argument("--clusters", type=int, default=2)
    pb.add_argument("--partitions", type=int, default=8, help="source partitions")
    pb.add_argument("--rounds", type=int, default=10, help="requests per page and tenant")
    pb.add_argument("--folder", default="", help="working folder (default: a fresh temp dir)")
    pb.add_argument("--keep", action="store_true", help="keep the database for --reuse")
    pb.add_argument("--reuse", default="", help="time a database built before in --folder")
    pb.add_argument("--json", action="store_true", help="one JSON object on one line")
    agent = sub.add_parser("agent", help="the GPU node agent")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    agent_run = agent_sub.add_parser("run", help="sample GPUs, spool and send reports")
    _flag(agent_run, "--config", "AGENT_CONFIG", help="agent config file (TOML)")
    agent_bench = agent_sub.add_parser("bench", help="CPU cost per tick, in process")
    agent_bench.add_argument("--gpus", type=int, default=8)
    agent_bench.add_argument("--ticks", type=int, default=600)
    agent_bench.add_argument("--tick-seconds", type=int, default=10)
    agent_bench.add_argument("--publish-ticks", type=int, default=6)
    agent_bench.add_argument("--json", action="store_true", help="last line: one JSON object")

    contracts = sub.add_parser(
        "contracts",
        help="load a contracts file into the warehouse",
        description="Validate a contracts file whole (tenants, terms in whole UTC days, rates "
        "per SKU and period, minimums, payment terms, taxes) and record it as a new load: the "
        "latest load is what statements rate with (contracts_current). Nothing is written "
        "when any field is refused. Format: billing/README.md, 'The contracts file'.",
        epilog="example: meter contracts load billing/contracts.example.json --database gpu_meter",
    )
    contracts.add_argument("action", choices=("load",))
    contracts.add_argument("file", type=Path, help="contracts JSON (billing/README.md)")
    _warehouse_flags(contracts)

    corr = sub.add_parser(
        "corrections",
        help="add or list audited corrections of metered usage",
        description="Void metered usage, or re-attribute it to another tenant, without "
        "touching the ledger: each correction is recorded with its author, reason and ticket "
        "(file format: billing/README.md, 'Corrections').",
    )
    corr.add_argument("action", choices=("add", "list"))
    corr.add_argument("file", type=Path, nargs="?", help="add: a corrections JSON file")
    corr.add_argument(
        "--dry-run",
        action="store_true",
        help="add: show what each correction moves; record nothing",
    )
    _flag(corr, "--period", "PERIOD", help="list: only corrections of this month, YYYY-MM")
    _warehouse_flags(corr)

    stmts = sub.add_parser("statements", help="issue the usage statements of a closed month")
    _flag(stmts, "--period", "PERIOD", required=True, help="month, YYYY-MM")
    _flag(stmts, "--tenant", "TENANT", help="only this tenant")
    _flag(
        stmts,
        "--issuer",
        "ISSUER_FILE",
        type=Path,
        help="the provider's identity (JSON, e.g. billing/issuer.example.json)",
    )
    _flag(stmts, "--out", "STATEMENTS_DIR", default="statements", type=Path, help="output folder")
    stmts.add_argument(
        "--dry-run",
        action="store_true",
        help="compose and show what would be issued; record and write nothing",
    )
    stmts.add_argument(
        "--force",
        action="store_true",
        help="issue before the pipeline has closed the month, or without usage",
    )
    stmts.add_argument(
        "--draft",
        action="store_true",
        help="write DRAFT statements of an open or unissued month; record nothing",
    )
    _warehouse_flags(stmts)

    verify = sub.add_parser("verify-statement", help="check a statement JSON file's digest")
    verify.add_argument("file", type=Path)

    rec = sub.add_parser("reconcile", help="ledger vs rollups, gaps, contracts, supplier invoice")
    _flag(rec, "--period", "PERIOD", required=True, help="month, YYYY-MM")
    _flag(rec, "--supplier-invoice", "SUPPLIER_INVOICE", type=Path, help="invoice CSV")
    _flag(rec, "--tolerance-gpu-hours", "TOLERANCE_GPU_HOURS", default="0.01", help="per line")
    _flag(rec, "--tolerance-amount", "TOLERANCE_AMOUNT", default="0.01", help="per line")
    rec.add_argument(
        "--recheck",
        action="store_true",
        help="compare the ledger even where an earlier pass covered the same table parts",
    )
    _warehouse_flags(rec)

    compact = sub.add_parser(
        "compact", help="merge a closed month's tables to one part each (faster reconcile)"
    )
    _flag(compact, "--period", "PERIOD", required=True, help="a month that is over, YYYY-MM")
    _warehouse_flags(compact)

    from portal.cli import add_parser as add_portal

    add_portal(sub, _flag, _warehouse_flags)

    demo = sub.add_parser("demo", help="simulated fleet through the whole pipeline, checked")
    _fleet_flags(demo)
    _flag(demo, "--database", "DEMO_DATABASE", default="demo", help="database (recreated)")
    demo.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    _flag(demo, "--out", "STATEMENTS_DIR", default="statements", type=Path, help="statements")
    _stack_dir(demo)
    _add_examples(sub)
    return parser


# One example per command, shown at the end of its --help (a command's own epilog wins).
_COMMAND_EXAMPLES = {
    "stack": "meter stack up   # then: meter stack status, meter stack down; --replicated",
    "migrate": "meter migrate --clickhouse-url "
    "'clickhouse://default:PASSWORD@ch1:9000/gpu_meter?http_port=8123'",
    "worker": "meter worker --bootstrap kafka1:9092 --topic gpu-usage --clickhouse-url "
    "'clickhouse://default:PASSWORD@ch1:9000/gpu_meter?http_port=8123' --metrics-port 9108",
    "status": "meter status --database gpu_meter --metrics-url http://worker1:9108/metrics",
    "fleet": "meter fleet --nodes 100 --reports 30 --totals-out emitted.json",
    "bench hotpath": "meter bench hotpath --nodes 200 --reports 100 --json",
    "bench e2e": "meter bench e2e --reports 8000 --json",
    "bench soak": "meter bench soak --json",
    "bench finance": "meter bench finance --months 3 --engines server --json",
    "bench freshness": "meter bench freshness --nodes 25000 --seconds 180 --json",
    "bench portal": "meter bench portal --rounds 10 --json",
    "portal serve": "meter portal serve --port 8080 --clickhouse-url "
    "'clickhouse://portal:PASSWORD@ch1:9000/gpu_meter'",
    "portal token issue": "meter portal token issue --tenant aurora-labs --ttl 12h "
    "--public-url https://portal.example",
    "portal token revoke": "meter portal token revoke 0c2592734ce7",
    "portal token list": "meter portal token list --tenant aurora-labs",
    "portal drafts": "meter portal drafts --issuer billing/issuer.example.json",
    "portal alerts set": "meter portal alerts set --tenant aurora-labs --url "
    "https://hooks.example/meter --secret-file secret.txt --usage-fractions 0.8,1",
    "portal alerts run": "meter portal alerts run --interval-s 60",
    "portal alerts disable": "meter portal alerts disable --tenant aurora-labs",
    "portal alerts log": "meter portal alerts log --tenant aurora-labs",
    "agent run": "meter agent run --config agent/agent.example.toml",
    "agent bench": "meter agent bench --json",
    "corrections": "meter corrections add billing/corrections.example.json --dry-run",
    "statements": "meter statements --period 2026-10 --issuer billing/issuer.example.json "
    "--out statements/ --dry-run",
    "verify-statement": "meter verify-statement statements/aurora-labs/aurora-labs-2026-10.json",
    "reconcile": "meter reconcile --period 2026-10 --supplier-invoice invoice.csv",
    "compact": "meter compact --period 2026-10   # after the month is closed",
    "demo": "meter demo --nodes 20 --reports 10 --keep-stack",
}


def _add_examples(sub: argparse._SubParsersAction, prefix: str = "") -> None:  # type: ignore[type-arg]
    for name, command in sub.choices.items():
        key = f"{prefix}{name}"
        if command.epilog is None and key in _COMMAND_EXAMPLES:
            command.epilog = f"example: {_COMMAND_EXAMPLES[key]}"
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_examples(action, f"{key} ")


def _warehouse_flags(parser: argparse.ArgumentParser, database: bool = True) -> None:
    """The flags of a one-shot command that reads or writes ClickHouse."""
    _flag(parser, "--clickhouse-url", "CLICKHOUSE_URL", help="clickhouse://host:port/db")
    if database:
        _flag(parser, "--database", "DATABASE", help="database (overrides the URL's)")
    _flag(
        parser,
        "--give-up-after-s",
        "GIVE_UP_AFTER_S",
        default="30",
        type=float,
        help="how long to wait for an unreachable ClickHouse before failing",
    )
    _stack_dir(parser)


def _clickhouse_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from stack import LocalStack
    from warehouse.client import ClickHouseSettings

    if args.clickhouse_url:
        settings = ClickHouseSettings.from_url(args.clickhouse_url)
    else:
        info = LocalStack(Path(args.stack_dir)).running()
        if info is None:
            raise MeterError(
                "no --clickhouse-url given and no local stack running (meter stack up)"
            )
        settings = info.settings("gpu_meter")
    database = getattr(args, "database", None)
    settings = replace(settings, database=database) if database else settings
    give_up = getattr(args, "give_up_after_s", None)  # a worker keeps trying: it is a service
    if give_up is not None and give_up <= 0:
        raise ConfigError(f"--give-up-after-s {give_up} must be above 0")
    return replace(settings, give_up_after_s=give_up)


def _cmd_contracts(args: argparse.Namespace) -> int:
    from billing import commands

    return commands.load_contracts(_clickhouse_settings(args), args.file)


def _cmd_corrections(args: argparse.Namespace) -> int:
    from billing import commands

    settings = _clickhouse_settings(args)
    if args.action == "list":
        return commands.list_corrections(settings, args.period)
    if args.file is None:
        raise ConfigError(
            "meter corrections add needs a corrections file: meter corrections "
            "add FILE (billing/corrections.example.json)"
        )
    return commands.add_corrections(settings, args.file, args.dry_run)


def _cmd_statements(args: argparse.Namespace) -> int:
    from billing import commands

    if args.draft and (args.force or args.dry_run):
        raise ConfigError("--draft issues nothing: it takes neither --force nor --dry-run")
    if args.draft:
        return commands.drafts(
            _clickhouse_settings(args), args.period, args.out, args.tenant, args.issuer
        )
    return commands.statements(
        _clickhouse_settings(args),
        args.period,
        args.out,
        args.tenant,
        args.issuer,
        args.force,
        args.dry_run,
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    from billing import commands

    return commands.verify(args.file)


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from billing import commands

    return commands.reconcile_period(
        _clickhouse_settings(args),
        args.period,
        args.supplier_invoice,
        args.tolerance_gpu_hours,
        args.tolerance_amount,
        args.recheck,
    )


def _cmd_compact(args: argparse.Namespace) -> int:
    from billing import commands

    return commands.compact_period(_clickhouse_settings(args), args.period)


def _cmd_stack(args: argparse.Namespace) -> int:
    from stack import LocalStack
    from stack.cluster import ReplicatedStack

    folder = Path(args.stack_dir)
    stack: LocalStack | ReplicatedStack
    if args.replicated:
        stack = ReplicatedStack(folder.with_name(f"{folder.name}-replicated"))
    else:
        stack = LocalStack(folder)
    if args.action == "up":
        for name, value in _stack_lines(stack):
            print(f"{name:<11} {value}")
        return 0
    if args.action == "down":
        print("stopped" if stack.down() else "nothing was running")
        return 0
    status = stack.status()
    print(json.dumps(status, indent=2))
    return 0 if status["state"] == "up" else 1


def _stack_lines(stack: object) -> list[tuple[str, str]]:
    """What ``meter stack up`` prints: addresses, URLs with the password shown as ****."""
    from stack import LocalStack
    from stack.clickhouse import PASSWORD_FILE
    from stack.cluster import ReplicatedStack

    if isinstance(stack, LocalStack):
        info = stack.up()
        return [
            ("broker", info.bootstrap),
            ("clickhouse", info.clickhouse_url_for("gpu_meter", shown=True)),
            ("password", f"in {info.password_path} (meter commands read it from there)"),
            ("folder", info.folder),
        ]
    assert isinstance(stack, ReplicatedStack)
    cluster = stack.up()
    lines = [("broker", f"{cluster.bootstrap}   (HAProxy before brokers {cluster.broker_ports})")]
    settings = stack.settings("gpu_meter")
    lines.append(("clickhouse", settings.to_url().replace(f":{settings.password}@", ":****@", 1)))
    lines += [
        ("replica", f"{r.name}: 127.0.0.1:{r.tcp_port} (HTTP {r.http_port})")
        for r in cluster.replicas
    ]
    lines += [
        ("password", f"in {stack.folder / PASSWORD_FILE} (put it in place of ****)"),
        ("folder", cluster.folder),
    ]
    return lines


def _cmd_migrate(args: argparse.Namespace) -> int:
    from warehouse.client import Warehouse
    from warehouse.migrate import migrate

    settings = _clickhouse_settings(args)
    applied = migrate(Warehouse(settings))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
    print(f"{settings.database}: applied {names}")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from streams.contract import ProcessorSettings
    from streams.host.settings import WorkerSettings
    from streams.host.worker import run_worker
    from streams.output.sink import check_states_stored
    from warehouse.client import Warehouse
    from warehouse.preflight import check_warehouse

    settings = WorkerSettings(
        bootstrap=_bootstrap(args),
        topic=args.topic,
        dlq_topic=args.dlq_topic,
        app_id=args.app_id,
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        clickhouse=replace(_clickhouse_settings(args), give_up_after_s=None),
        datadir=Path(args.datadir),
        processor=ProcessorSettings(lateness_us=int(args.lateness_s * US_PER_SECOND)),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        hot_path=not args.plain,
        batch_max_messages=args.batch_messages,
        processing_threads=args.processing_threads,
        snapshot_interval_s=args.snapshot_interval_s,
        session_timeout_s=args.session_timeout_s,
        heartbeat_interval_s=args.session_timeout_s / 4,
    )
    # Checked once, with a bounded wait, before joining the group (the worker itself then
    # waits for ClickHouse for as long as it takes: it must not drop data).
    preflight = Warehouse(_clickhouse_settings(args))
    try:
        check_warehouse(preflight)
        check_states_stored(preflight, settings.topic)
    finally:
        preflight.close()
    from core.logs import configure, wants_json

    # One format for the worker's lines and Faust's: Faust is told to leave logging alone.
    configure(args.log_level, wants_json(args.log_format), service="worker")
    run_worker(settings, loglevel=args.log_level.lower())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from meter.status import check_metrics_url, collect, render
    from warehouse.client import Warehouse

    for url in args.metrics_url:
        check_metrics_url(url)
    if args.silent_after_s <= 0:
        raise ConfigError(f"--silent-after-s {args.silent_after_s} must be above 0")
    status = collect(Warehouse(_clickhouse_settings(args)), args.metrics_url, args.silent_after_s)
    if args.json:
        print(json.dumps(status, default=str, indent=2))
    else:
        print("\n".join(render(status)))
    return 0


def _bootstrap(args: argparse.Namespace) -> str:
    from stack import LocalStack

    if args.bootstrap:
        return str(args.bootstrap)
    info = LocalStack(Path(args.stack_dir)).running()
    if info is None:
        raise MeterError("no --bootstrap given and no local stack running (meter stack up)")
    return info.bootstrap


def _cmd_fleet(args: argparse.Namespace) -> int:
    from agent.fleet import spec_dict
    from core.identity import check_topic
    from meter.runner import publish_fleet

    check_topic(args.topic)
    spec = _fleet_spec(args)
    emitted, end_offsets = publish_fleet(
        spec, _bootstrap(args), args.topic, lambda n: print(f"published {n:,} reports", flush=True)
    )
    print(f"published {emitted.reports:,} reports, {emitted.samples:,} samples; ends {end_offsets}")
    if args.totals_out:
        emitted.write(Path(args.totals_out), {"spec": spec_dict(spec), "topic": args.topic})
        print(f"emitted totals written to {args.totals_out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from meter.demo import DEMO_START_US, DemoOptions, main_demo

    options = DemoOptions(
        spec=replace(_fleet_spec(args), start_us=DEMO_START_US),
        database=args.database,
        keep_stack=args.keep_stack,
        statements_dir=args.out,
    )
    return main_demo(options, Path(args.stack_dir))


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "soak":
        from bench.soak import main_soak

        return main_soak(args)
    if args.bench == "finance":
        from bench.finance import main_finance

        return main_finance(args)
    if args.bench == "portal":
        from bench.portal import main_portal

        return main_portal(args)
    if args.bench == "freshness":
        from bench.freshness import main_freshness

        return main_freshness(args)
    if args.bench == "e2e":
        from bench.e2e import main_e2e

        return main_e2e(args)
    from bench.hotpath import print_hotpath, run_hotpath_bench

    result = run_hotpath_bench(
        args.nodes, args.reports, args.repeats, None if args.cpu < 0 else args.cpu
    )
    print_hotpath(result, args.json)
    return 0


def _cmd_portal(args: argparse.Namespace) -> int:
    from portal.cli import run

    return run(args, _clickhouse_settings)


def _cmd_agent(args: argparse.Namespace) -> int:
    if args.agent_command == "bench":
        from bench.agent import main_agent_bench

        return main_agent_bench(
            args.gpus, args.ticks, args.tick_seconds, args.publish_ticks, args.json
        )
    from agent.config import load_config
    from agent.runner import run_agent
    from core.logs import configure

    if not args.config:
        raise ConfigError("agent run needs --config FILE (or METER_AGENT_CONFIG)")
    config = load_config(args.config)
    configure(args.log_level, config.log_format == "json", node_id=config.node_id)
    return run_agent(config)


COMMANDS = {
    "stack": _cmd_stack,
    "migrate": _cmd_migrate,
    "worker": _cmd_worker,
    "status": _cmd_status,
    "fleet": _cmd_fleet,
    "demo": _cmd_demo,
    "bench": _cmd_bench,
    "agent": _cmd_agent,
    "contracts": _cmd_contracts,
    "corrections": _cmd_corrections,
    "statements": _cmd_statements,
    "verify-statement": _cmd_verify,
    "reconcile": _cmd_reconcile,
    "compact": _cmd_compact,
    "portal": _cmd_portal,
}


def main(argv: Sequence[str] | None = None) -> int:
    from meter.boundary import explain

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader left (`meter stack status | head`): nothing more to say, to anyone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"meter {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        line = explain(exc)
        if line is None or args.debug:
            raise
        hint = "" if isinstance(exc, MeterError) else " (--debug shows the traceback)"
        print(f"meter {args.command}: {line}{hint}", file=sys.stderr)
        return 2
