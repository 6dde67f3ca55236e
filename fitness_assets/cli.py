"""`fitness-assets`: simulate landing data, run the asset graph in one process, report, reset; serve a
local Kafka broker and play a simulated chain to it live."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fitness_assets.lakehouse.spark import SparkUnavailable
from fitness_assets.settings import ConfigError, Settings, SparkEnv

if TYPE_CHECKING:
    from fitness_assets.simulator import Simulator, Truth
    from fitness_assets.streaming.producer import ProduceStats

GATING_LOGGER = "dagster._core.execution.plan.active"  # its warnings: checks with no result to gate on
PRESETS = {"tiny": None, "small": 50_000, "medium": 500_000, "large": 5_000_000}


def _simulate(args: argparse.Namespace, settings: Settings) -> None:
    from fitness_assets.simulator import Simulator, SimulatorConfig

    overrides = {"seed": args.seed, "batches": args.batches}
    if args.readings:
        config = SimulatorConfig.scaled(args.readings, **overrides)
    elif PRESETS[args.preset] is None:
        config = SimulatorConfig.tiny(**overrides)
    else:
        config = SimulatorConfig.scaled(PRESETS[args.preset], **overrides)
    started = time.perf_counter()
    bootstrap = getattr(args, "kafka_bootstrap_servers", None)
    if bootstrap:
        truth, stats = _simulate_to_kafka(Simulator(config), settings.landing_root, bootstrap)
        print(f"Simulated {truth.counts.bpm_readings:,} heart-rate readings, {truth.counts.members} members: "
              f"CSV files into {settings.landing_root}, {stats.summary()} to {bootstrap} "
              f"in {time.perf_counter() - started:.1f} s")
        return
    truth = Simulator(config).write_all(settings.landing_root)
    print(f"Simulated {truth.counts.bpm_readings:,} heart-rate readings, {truth.counts.members} members into "
          f"{settings.landing_root} in {time.perf_counter() - started:.1f} s")


def _simulate_to_kafka(simulator: Simulator, landing_root: str | Path,
                       bootstrap_servers: str) -> tuple[Truth, ProduceStats]:
    """Simulate into a hidden folder of the landing root, publish the CSV files (renames on
    one file system, in name order), produce the multiplex instead of landing it, then drop
    the hidden folder. Returns the truth and the producer's counts."""
    import tempfile

    from fitness_assets.simulator.writer import check_publishable, publish_file
    from fitness_assets.streaming.producer import MULTIPLEX_FOLDER, multiplex_files, produce_files

    root = Path(landing_root)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="_simulate-", dir=root))
    try:
        truth = simulator.write_all(stage)
        csvs = [(path, root / source / path.name) for source in ("registered_users", "gym_logins")
                for path in sorted((stage / source).glob("*")) if not path.name.startswith(("_", "."))]
        check_publishable(csvs)  # before a record is produced: a refused chain sends nothing
        stats = produce_files(bootstrap_servers, multiplex_files(stage / MULTIPLEX_FOLDER))
        for path, target in csvs:
            target.parent.mkdir(exist_ok=True)
            publish_file(path, target)
        os.replace(stage / "_truth.json", root / "_truth.json")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return truth, stats


def _kafka_servers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    servers = args.kafka_bootstrap_servers or os.environ.get("FITNESS_KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        parser.error("--kafka-bootstrap-servers (or FITNESS_KAFKA_BOOTSTRAP_SERVERS) is required")
    try:
        return _servers(servers)
    except argparse.ArgumentTypeError as error:
        parser.error(f"FITNESS_KAFKA_BOOTSTRAP_SERVERS: {error}")


class KafkaFailed(RuntimeError):
    """Records could not be produced; the message says to whom and why."""


@contextlib.contextmanager
def _kafka_failure_in_one_line(servers: str | None):
    """A producer's ``KafkaException`` as ``KafkaFailed``, one line naming the broker."""
    if not servers:
        yield
        return
    from confluent_kafka import KafkaException

    from fitness_assets.streaming.settings import kafka_error_text

    try:
        yield
    except KafkaException as error:
        raise KafkaFailed(f"producing to Kafka at {servers} failed ({kafka_error_text(error)}): start the broker or "
                          "fix the bootstrap servers; the landing files of what failed were not delivered") from None


@contextlib.contextmanager
def _jvm_output_to(folder: Path | None):
    """A local Spark's JVM inherits this process's stderr when it starts: point it at
    ``<folder>/spark-driver.log`` meanwhile, so Spark's start-up warnings (and its later log)
    go there instead of the terminal. When the start fails, the last lines this start wrote
    there are shown, and the failure becomes ``SparkUnavailable`` (one line, no traceback)."""
    folder = folder or Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spark-driver.log"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            start = log.tell()  # the log is appended to: earlier runs' lines are not this start's
            os.dup2(log.fileno(), 2)
        yield path
    except (SparkUnavailable, KeyboardInterrupt):
        raise  # no JVM of ours (its log has nothing to say), or stopped by hand
    except Exception as error:
        os.dup2(saved, 2)
        with open(path, "rb") as log:
            log.seek(start)
            tail = log.read().decode(errors="replace").splitlines()[-20:]
        if tail:  # the JVM may have written to stdout instead (a heap it cannot reserve)
            print(f"Spark did not start; the end of {path}:", *tail, sep="\n", file=sys.stderr)
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise SparkUnavailable(f"Spark did not start ({type(error).__name__}: {first}); "
                               f"check FITNESS_SPARK_* and Java, and see {path}") from error
    finally:
        os.dup2(saved, 2)
        os.close(saved)


#: The run tag that lifts run monitoring's run-time limit (Dagster reads 0 as none).
NO_RUNTIME_LIMIT = {"dagster/max_runtime": "0"}


class SelectionError(ValueError):
    """A ``--select`` entry that names no table of the graph."""


def selected_keys(defs, selection: list[str] | None) -> list | None:
    """The asset keys ``selection`` names (``<layer>/<table>``, or a whole layer), with the
    quarantine table of a bronze table and the other way round (one step writes both); None
    for the whole graph. A name that is no table is a ``SelectionError`` in one line."""
    from dagster import AssetKey, AssetSelection

    if selection is None:
        return None
    names = [s.strip() for s in selection if s.strip()]
    if not names:
        if selection:  # given, naming nothing (a blank variable): not the whole graph
            raise SelectionError("--select names no table: name one as <layer>/<table> (e.g. silver/users) or a "
                                 "layer, or leave --select out to run the whole graph")
        return None
    graph = defs.resolve_asset_graph()
    tables = graph.materializable_asset_keys
    layers = sorted({graph.get(k).group_name for k in tables})
    chosen: set = set()
    for name in names:
        key = AssetKey.from_user_string(name)
        if key in tables:
            chosen.add(key)
        elif name in layers:
            chosen.update(k for k in tables if graph.get(k).group_name == name)
        elif key in graph.get_all_asset_keys():
            raise SelectionError(f"{name} is a source, observed and never materialized: select the bronze "
                                 "table it feeds instead")
        else:
            raise SelectionError(f"no table {name!r} in the graph: name one as <layer>/<table> (e.g. silver/users) "
                                 f"or a layer ({', '.join(layers)})")
    return list(AssetSelection.assets(*chosen).required_multi_asset_neighbors().resolve(graph))


@dataclass
class _Prepared:
    """A run's definitions, selection and started Spark: everything that can fail on the
    configuration has been tried."""

    defs: Any
    keys: list | None
    logger_config: dict
    spark_seconds: float
    started: float


def _prepare(selection: list[str] | None, settings: Settings | None, spark_env: SparkEnv | None,
             verbose: bool, dropping: bool = False) -> _Prepared:
    """Definitions, the selection's keys, the landing root (when bronze is selected), a
    writable lakehouse and Spark: misconfiguration fails here, in one line, before anything
    is written."""
    from dagster import AssetKey, colored_console_logger

    from fitness_assets import report as rpt
    from fitness_assets.definitions import build_definitions
    from fitness_assets.pipelines.bronze import check_landing_root
    from fitness_assets.progress import progress_logger
    from fitness_assets.tables import DATE_LOOKUP, KAFKA_MULTIPLEX_BZ

    started = time.perf_counter()
    loggers, logger_config = {"progress": progress_logger}, {"progress": {}}
    # A table's checks evaluated on exactly the data they last passed on emit no result (see
    # assets/checks_lib.py); Dagster then warns once per downstream step, ~70 lines for a run
    # with nothing new. The progress lines say what ran; --verbose shows the warnings too.
    logging.getLogger(GATING_LOGGER).setLevel(logging.NOTSET if verbose else logging.ERROR)
    if verbose:
        loggers["console"], logger_config["console"] = colored_console_logger, {"config": {"log_level": "DEBUG"}}
    defs = build_definitions(settings, spark_env, loggers=loggers)
    keys = selected_keys(defs, selection)
    resources = defs.resources
    if keys is None or any(k.path[0] == "bronze" for k in keys):
        check_landing_root(resources["lakehouse"].landing_root)
    store = resources["lakehouse"].store()
    store.check_writable()
    if dropping:
        store.check_droppable()
    report_dir = rpt.report_dir(resources["lakehouse"].root)
    rpt.check_report_dir(report_dir)
    spark_started = time.perf_counter()
    with _jvm_output_to(report_dir):
        resources["spark"].session()
    calendar, multiplex = AssetKey(DATE_LOOKUP.asset_key_path), AssetKey(KAFKA_MULTIPLEX_BZ.asset_key_path)
    if keys is not None and multiplex in keys and calendar not in keys and not store.exists(DATE_LOOKUP):
        keys.append(calendar)  # the multiplex's rows take their dates from it: made first, in the same run
    return _Prepared(defs, keys, logger_config, time.perf_counter() - spark_started, started)


def _execute(prepared: _Prepared, instance):
    """Materialize the prepared selection with its checks and return the report."""
    from fitness_assets.definitions import ALL_ASSETS_JOB

    job = prepared.defs.resolve_job_def(ALL_ASSETS_JOB)
    # No run-time limit: the instance's (an hour, for the daemon's runs) would have run
    # monitoring mark a long CLI run failed while it still writes, freeing the run slot for a
    # daemon run beside it. A CLI run whose process dies is marked failed by the next run.
    result = job.execute_in_process(instance=instance, asset_selection=prepared.keys, raise_on_error=False,
                                    run_config={"loggers": prepared.logger_config}, tags=NO_RUNTIME_LIMIT)
    resources = prepared.defs.resources
    store = resources["lakehouse"].store()
    try:
        with store.step():
            report, page = _report(result, store, resources, prepared.spark_seconds)
    except Exception as error:  # Spark gone (a Connect server stopped): the run's outcome still
        report, page = _outcome_only(result, prepared.spark_seconds, error), None
    report.overview = str(page) if page else None
    report.wall_seconds = time.perf_counter() - prepared.started
    return report


def run_graph(selection: list[str] | None = None, settings: Settings | None = None,
              spark_env: SparkEnv | None = None, instance=None, verbose: bool = False):
    """Materialize ``selection`` (asset key strings like ``silver/users``, or layers; all when
    empty) with checks, in this process, and return the report. Progress is one line per step;
    with ``verbose``, Dagster's whole event log is printed as well."""
    instance = _instance(instance)
    return _execute(_prepare(selection, settings, spark_env, verbose), instance)


def prepare_graph(selection: list[str] | None = None, settings: Settings | None = None,
                  spark_env: SparkEnv | None = None, verbose: bool = False):
    """``run_graph`` in two halves: everything that can fail on the configuration (the
    selection, the landing root, the lakehouse, Spark) now, and the returned function, given an
    instance, runs it and returns the report. A rebuild drops its tables in between."""
    prepared = _prepare(selection, settings, spark_env, verbose)
    return lambda instance=None: _execute(prepared, _instance(instance))


def _instance(instance=None):
    """``instance``, or the project's own under DAGSTER_HOME, with no run left STARTED whose
    process is gone (kill -9, OOM)."""
    from dagster import DagsterInstance

    from fitness_assets.instance import ensure_instance, fail_dead_runs

    if instance is None:
        ensure_instance()
        instance = DagsterInstance.get()
    fail_dead_runs(instance)
    return instance


class RunInProgress(RuntimeError):
    """A rebuild or a reset must not drop tables a run is writing."""


def refuse_while_running(instance, what: str) -> None:
    """``RunInProgress`` when a run of ``instance`` is queued, starting or running."""
    from dagster import RunsFilter
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    running = instance.get_run_records(RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)), limit=1)
    if running:
        raise RunInProgress(f"run {running[0].dagster_run.run_id} is in progress: wait for it to end, or stop "
                            f"automation (FITNESS_AUTOMATION=off, or the sensors in the UI), before {what}")


def rebuild_graph(layer: str, settings: Settings | None = None, spark_env: SparkEnv | None = None,
                  instance=None, verbose: bool = False):
    """Drop ``layer``'s tables and every table downstream of them (downstream first), then
    materialize them again with their checks from what is upstream (the landing zone and Kafka
    for bronze); refused while a run of the instance is in progress."""
    from fitness_assets.databricks.rebuild import rebuild_selection, rebuild_tables

    tables = rebuild_tables(layer)
    instance = _instance(instance)
    refuse_while_running(instance, "a rebuild")
    # Everything that can fail on the configuration (landing root, lakehouse, Spark) is tried
    # before the first table is dropped.
    prepared = _prepare(rebuild_selection(layer), settings, spark_env, verbose, dropping=True)
    refuse_while_running(instance, "a rebuild")  # one may have started while Spark started
    store = prepared.defs.resources["lakehouse"].store()
    for spec in reversed(tables):
        store.drop(spec)
        print(f"dropped {spec.qualified_name}", flush=True)
    return _execute(prepared, instance)


def _outcome(result) -> dict[str, Any]:
    """What the run itself says, with no table read: its checks, failed steps and why."""
    from fitness_assets import report as rpt
    from fitness_assets.assets.checks_lib import KEPT_KEY
    from fitness_assets.progress import failure_reason

    failed = [e for e in result.all_events if e.is_step_failure]
    evaluations = result.get_asset_check_evaluations()
    # Checks of the materialized tables that gave no result: their step failed or did not run,
    # or they compare tables that are not in step (see assets/checks_lib.py).
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    evaluated = {(e.asset_key, e.check_name) for e in evaluations}
    silent = sorted(f"{key.asset_key.to_user_string()} :: {key.name}"
                    for key in result.job_def.asset_layer.asset_graph.asset_check_keys
                    if key.asset_key in materialized and (key.asset_key, key.name) not in evaluated)
    return {"checks": [rpt.CheckOutcome(e.asset_key.to_user_string(), e.check_name, e.passed, e.severity.value,
                                        KEPT_KEY in e.metadata)
                       for e in evaluations],
            "not_evaluated": silent,
            "failed_steps": [e.step_key for e in failed],
            "failures": {e.step_key: failure_reason(e.step_failure_data.error) for e in failed}}


def _outcome_only(result, spark_seconds: float, error: Exception):
    """The report of a run whose tables cannot be read afterwards: its steps and checks, and
    why the rest is missing."""
    from fitness_assets import report as rpt

    outcome = _outcome(result)
    outcome["failures"]["(report)"] = f"tables, quarantine and headlines not read: {type(error).__name__}: " + (
        str(error).strip().splitlines() or [""])[0][:300]
    return rpt.RunReport(success=result.success, wall_seconds=0.0, spark_start_seconds=spark_seconds, complete=False,
                         **outcome)


def _report(result, store, resources, spark_seconds: float):
    """The run's report and its overview page (the tables' row counts, quarantine reasons,
    checks and headlines)."""
    from fitness_assets import report as rpt
    from fitness_assets.headlines import headlines, overview
    from fitness_assets.lakehouse.spark import running_description

    data = overview(store)  # shared by the headlines and the overview page
    report = rpt.RunReport(
        success=result.success,
        wall_seconds=0.0,
        spark_start_seconds=spark_seconds,
        tables=rpt.table_rows(store),
        quarantine_reasons=rpt.quarantine_reasons(store),
        headlines=headlines(store, resources["spark"].session(), data),
        spark=running_description(),
        **_outcome(result),
    )
    page = rpt.write_overview(store, rpt.report_dir(resources["lakehouse"].root), report.headlines, data=data)
    return report, page


def _spark_archive(force: bool) -> int:
    """Record the local Spark driver's class archive on the demo's workload (see
    ``lakehouse.class_archive``), unless one for this pyspark and this Java exists."""
    import dataclasses

    from dagster import DagsterInstance

    from fitness_assets.lakehouse import class_archive

    path = class_archive.archive_path()
    if path is None:
        print(f"Spark class archive: none ({class_archive.ENV}=off or no java)")
        return 0
    if path.is_file() and not force:
        print(f"Spark class archive: {path}")
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fitness-archive-") as work:
        settings = dataclasses.replace(Settings.from_env(), landing_root=f"{work}/landing",
                                       lakehouse_root=f"{work}/lakehouse", catalog=None, backend="delta-rs")
        args = argparse.Namespace(seed=42, batches=1, readings=None, preset="tiny")
        with contextlib.redirect_stdout(io.StringIO()), DagsterInstance.ephemeral() as instance:
            _simulate(args, settings)
            class_archive.record(lambda: run_graph([], settings, SparkEnv(), instance=instance))
    print(f"Spark class archive: recorded {path} ({path.stat().st_size / 2**20:.0f} MiB) "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


def _reset(settings: Settings) -> int:
    """Delete the landing zone, the lakehouse and Dagster's local state, saying for each what
    became of it; refused (exit 2) for tables that are not in local folders, and while a run is
    in progress."""
    from fitness_assets.instance import dagster_home
    from fitness_assets.lakehouse.store import local_path

    lakehouse = local_path(settings.lakehouse_root) if settings.backend == "delta-rs" else None
    if lakehouse is None:
        where = "a catalog" if settings.backend != "delta-rs" else settings.lakehouse_root
        print(f"fitness-assets: reset deletes local folders only, and the tables are in {where}: drop them with "
              "that system's tools (or point FITNESS_LAKEHOUSE_ROOT and FITNESS_TABLE_BACKEND at a local lakehouse)",
              file=sys.stderr)
        return 2
    home = dagster_home()
    if home.is_dir():
        refuse_while_running(_instance(), "a reset")
    failed = False
    for path in (local_path(settings.landing_root) or settings.landing_root, lakehouse, str(home)):
        if not os.path.lexists(path):
            print(f"absent  {path}")
            continue
        try:
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        except OSError as error:
            print(f"fitness-assets: could not remove {path}: {error.strerror} ({error.filename})", file=sys.stderr)
            failed = True
            continue
        print(f"removed {path}")
    return 1 if failed else 0


def _ranged(kind: type, low: float, high: float, what: str) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` from ``low`` to ``high``; else the usage and ``what``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_count = _ranged(int, 1, float("inf"), "a whole number of at least 1")
_port = _ranged(int, 0, 65535, "a port (0 to 65535; 0: any free port)")
_seconds = _ranged(float, 0, sys.float_info.max, "a number of seconds (0 or more)")


def _servers(text: str) -> str:
    from fitness_assets.streaming.settings import bootstrap_problem

    problem = bootstrap_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} is not {problem}")
    return text


def _interrupt(*_: object) -> None:
    """SIGTERM stops like Ctrl-C, so the servers this process started are stopped too."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fitness-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="write simulated landing files")
    demo = sub.add_parser("demo", help="simulate a small chain, run the whole graph, report")
    for p in (sim, demo):
        p.add_argument("--preset", choices=sorted(PRESETS), default="tiny" if p is demo else "small")
        p.add_argument("--readings", type=_count, default=None, help="about this many heart-rate readings")
        p.add_argument("--batches", type=_count, default=1, help="split the data into this many file batches")
        p.add_argument("--seed", type=int, default=42)
    sim.add_argument("--kafka-bootstrap-servers", type=_servers, default=None, metavar="HOST:PORT",
                     help="produce the Kafka multiplex to this broker INSTEAD of writing kafka_multiplex/ files "
                          "(CSV files still go to the landing root); lines that cannot be Kafka messages "
                          "(no topic, unknown topic) are skipped and counted")
    run = sub.add_parser("run", help="materialize assets (default: all) on the files the landing root holds")
    run.add_argument("--select", default=None, help="comma-separated asset keys or layers, e.g. "
                                                    "bronze/gym_logins_bz,silver (default: the whole graph)")
    for p in (demo, run):
        p.add_argument("--verbose", action="store_true", help="print Dagster's event log too (DEBUG)")
    rebuild = sub.add_parser("rebuild", help="drop a layer's tables and every table downstream of them, then make "
                                             "them again from upstream (bronze: from the landing zone and Kafka)")
    rebuild.add_argument("layer", choices=["bronze", "silver", "gold"])
    rebuild.add_argument("--verbose", action="store_true", help="print Dagster's event log too (DEBUG)")
    sub.add_parser("reset", help="delete the landing zone, the lakehouse and Dagster's local state")
    brk = sub.add_parser("broker", help="serve a local Kafka-protocol broker (librdkafka's mock cluster, in "
                                        "memory) with the topics user_info, workout, bpm until Ctrl-C/SIGTERM")
    brk.add_argument("--port", type=_port, default=9092, help="loopback port to serve on (0: any free port)")
    brk.add_argument("--partitions", type=_count, default=4, help="partitions of each topic")
    live = sub.add_parser("produce-live", help="play a simulated chain in accelerated real time: every interval, "
                                               "the next batch's CSV files into the landing root and its Kafka "
                                               "records to the broker")
    live.add_argument("--kafka-bootstrap-servers", type=_servers, default=None, metavar="HOST:PORT",
                      help="broker to produce to (default: $FITNESS_KAFKA_BOOTSTRAP_SERVERS)")
    live.add_argument("--interval", type=_seconds, default=5.0, help="seconds between batches")
    live.add_argument("--batches", type=_count, default=48,
                      help="the simulated days are split into this many batches, all delivered (Ctrl-C stops early)")
    live.add_argument("--members", type=_count, default=50)
    live.add_argument("--days", type=_count, default=2, help="simulated days")
    live.add_argument("--seed", type=int, default=42)
    stack = sub.add_parser("live", help="the live platform: a local broker, a producer playing the chain in "
                                        "accelerated real time, and the Dagster UI with its daemon (sensors, "
                                        "automation, freshness), until Ctrl-C")
    stack.add_argument("--port", type=_port, default=9092, help="broker port (ignored with FITNESS_KAFKA_BOOTSTRAP_SERVERS)")
    stack.add_argument("--ui-port", type=_port, default=3000)
    stack.add_argument("--interval", type=_seconds, default=5.0, help="seconds between delivered batches")
    stack.add_argument("--batches", type=_count, default=48, help="batches the producer plays before it stops")
    stack.add_argument("--spark-port", type=_port, default=15002,
                       help="port of the warm Spark (Spark Connect) the runs use, unless FITNESS_SPARK_MODE is set")
    stack.add_argument("--microbatch-seconds", type=_count, default=30,
                       help="FITNESS_MICROBATCH_SECONDS unless set: shortest time between two sensor evaluations")
    connect = sub.add_parser("spark-connect", help="serve a warm Spark (the Spark Connect server inside the pyspark "
                                                   "wheel) on loopback until Ctrl-C; use it with FITNESS_SPARK_MODE=connect")
    connect.add_argument("--port", type=_port, default=15002)
    archive = sub.add_parser("spark-archive", help="record the local Spark driver's class archive (Java CDS) once, "
                                                   "so later drivers start faster; a no-op when it exists")
    archive.add_argument("--force", action="store_true", help="record it again")
    args = parser.parse_args(argv)
    try:
        return _command(args, parser)
    except (ConfigError, SparkUnavailable, KafkaFailed) as error:  # one line saying what to set or start
        print(f"fitness-assets: {error}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "spark-archive":
        return _spark_archive(args.force)
    if args.command == "spark-connect":
        from fitness_assets.lakehouse.connect_server import SparkConnectServer

        signal.signal(signal.SIGTERM, _interrupt)
        with SparkConnectServer(port=args.port) as server:
            print(f"Spark Connect at {server.url}: FITNESS_SPARK_MODE=connect FITNESS_SPARK_CONNECT_URL={server.url}",
                  flush=True)
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
        return 0
    if args.command == "live":
        from fitness_assets.devstack import LOCAL_BROKER_AFTER_EARLIER_ONE, earlier_broker_positions, run_live

        settings = Settings.from_env()
        if not os.environ.get("FITNESS_KAFKA_BOOTSTRAP_SERVERS") and earlier_broker_positions(settings.lakehouse_root):
            print(LOCAL_BROKER_AFTER_EARLIER_ONE, file=sys.stderr)
            return 2
        try:
            return run_live(settings.landing_root, port=args.port, ui_port=args.ui_port,
                            interval=args.interval, batches=args.batches, microbatch_seconds=args.microbatch_seconds,
                            spark_port=args.spark_port)
        except (OSError, TimeoutError) as error:  # a port in use, a server that did not come up
            print(f"fitness-assets: the live platform did not start: {error}", file=sys.stderr)
            return 2
    if args.command == "broker":
        from fitness_assets.streaming.broker import serve

        try:
            return serve(port=args.port, partitions=args.partitions)
        except OSError as error:
            print(f"cannot serve on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
            return 1
    settings = Settings.from_env()
    if args.command == "produce-live":
        from fitness_assets.streaming.live import live_config, run_live

        servers = _kafka_servers(args, parser)
        config = live_config(batches=args.batches, members=args.members, days=args.days, seed=args.seed)
        with _kafka_failure_in_one_line(servers):
            run_live(servers, settings.landing_root, config, interval=args.interval)
        return 0

    if args.command == "reset":
        try:
            return _reset(settings)
        except RunInProgress as error:
            print(f"fitness-assets: {error}", file=sys.stderr)
            return 2
    if args.command in ("simulate", "demo"):
        from fitness_assets.simulator.writer import LandedFileDiffers

        try:
            with _kafka_failure_in_one_line(getattr(args, "kafka_bootstrap_servers", None)):
                _simulate(args, settings)
        except LandedFileDiffers as error:
            print(f"fitness-assets: {error}", file=sys.stderr)
            return 2
        if args.command == "simulate":
            return 0
    given = getattr(args, "select", None)
    selection = None if given is None else given.split(",")
    from fitness_assets.lakehouse.store import LakehouseNotWritable
    from fitness_assets.pipelines.bronze import IngestConfigError

    try:
        if args.command == "rebuild":
            report = rebuild_graph(args.layer, settings, verbose=args.verbose)
        else:
            report = run_graph(selection, settings, verbose=args.verbose)
    except (IngestConfigError, LakehouseNotWritable, RunInProgress, SelectionError) as error:
        print(f"fitness-assets: {error}", file=sys.stderr)
        return 2
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
