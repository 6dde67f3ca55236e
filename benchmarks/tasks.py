"""The measured tasks: each runs in a worker process of its own (``python -m benchmarks --task
TASK``), started by the orchestrator (benchmarks.scenarios.run_task), and returns what it
measured as JSON-able data.

Simulating and staging landing data are tasks too (timed, never counted in a run); ``bronze``
and ``graph`` materialize with ``run_graph``; ``kafka`` produces to a mock broker and reads it
back with a plain loop and with ``ingest_kafka``; ``live`` is benchmarks.live.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.config import (
    BRONZE_SELECTION,
    CONNECT_URL_ENV,
    DRIVER_MEMORY,
    KAFKA_BASELINE_RUNS,
    KAFKA_GOAL_RATIO,
    KAFKA_PARTITIONS,
    LIVE_ROUNDS,
    MICRO_BATCH,
    MICRO_BATCHES,
    MICRO_DAYS,
    REFERENCE_DATE,
    SIZES,
    SOURCE_FOLDERS,
    Result,
)

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from fitness_assets.simulator import SimulatorConfig, Truth


def _simulator_config(size: str, batches: int = 1, days: int | None = None) -> SimulatorConfig:
    from fitness_assets.simulator import SimulatorConfig

    readings = SIZES[size]
    overrides: dict[str, Any] = {"batches": batches, "split": "time"} | ({"days": days} if days else {})
    if readings is None:
        return SimulatorConfig.tiny(**overrides)
    return SimulatorConfig.scaled(readings, **overrides)


def _truth_summary(truth: Truth, seconds: float) -> Result:
    return {
        "simulate_seconds": seconds,
        "readings": truth.counts.bpm_readings,
        "members": truth.counts.members,
        "days": truth.config["days"],
        "lines": {name: source.lines for name, source in truth.sources.items()},
        "total_lines": sum(source.lines for source in truth.sources.values()),
    }


def batch_files(folder: Path, batch: int) -> list[Path]:
    """The landing files of ``batch`` under every source folder of ``folder``."""
    prefix = f"batch-{batch:05d}-part-"
    return sorted(
        entry
        for source in SOURCE_FOLDERS
        if (folder / source).is_dir()
        for entry in (folder / source).iterdir()
        if entry.name.startswith(prefix)
    )


def release_batches(staging: Path, landing: Path, batches: range) -> int:
    """Move the files of ``batches`` from ``staging`` into ``landing``, in delivery order.

    A file moved whole with ``os.replace`` appears atomically, as a producer's publish would.
    Returns the number of files moved.
    """
    moved = 0
    for batch in batches:
        for path in batch_files(staging, batch):
            target = landing / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved += 1
    return moved


def task_simulate(size: str, workdir: Path) -> Result:
    """Write the whole simulation of ``size`` into ``workdir/landing``."""
    from fitness_assets.simulator import Simulator

    started = time.perf_counter()
    truth = Simulator(_simulator_config(size)).write_all(workdir / "landing")
    return _truth_summary(truth, time.perf_counter() - started)


def task_stage(size: str, workdir: Path) -> Result:
    """Simulate ``size`` in 100 time-split batches into ``workdir/staging`` and release every
    batch before the micro-batch (``MICRO_BATCH``) into ``workdir/landing``.

    One ``write_all`` replaces a ``write_batch`` call per batch, each of which would replay
    the whole stream.
    """
    from fitness_assets.simulator import Simulator

    started = time.perf_counter()
    truth = Simulator(_simulator_config(size, MICRO_BATCHES, MICRO_DAYS)).write_all(workdir / "staging")
    out = _truth_summary(truth, time.perf_counter() - started)
    lines = [sum(source.lines for source in batch.sources.values()) for batch in truth.batches]
    shares = [n / out["total_lines"] for n in lines]
    micro = MICRO_BATCH
    out.update(
        micro_batch=micro,
        micro_batch_lines=lines[micro],
        micro_batch_share=shares[micro],
        share_before_micro_batch=sum(shares[:micro]),
        last_batch_share=shares[-1],
        files_released=release_batches(workdir / "staging", workdir / "landing", range(micro)),
    )
    return out


def _stop_spark_and_reap_jvm() -> None:
    """Stop the session and wait for the JVM to exit, so that ``RUSAGE_CHILDREN`` counts it.

    ``SparkSession.stop`` leaves the gateway JVM running until its stdin closes, and an
    orphaned JVM would never be reaped by this process.
    """
    from pyspark import SparkContext

    from fitness_assets.lakehouse.spark import stop_session

    gateway = SparkContext._gateway
    stop_session()
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc is not None:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=120)


def _peak_mib(who: int) -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(who).ru_maxrss / 1024


def _step_seconds(instance: DagsterInstance) -> tuple[dict[str, float], float | None]:
    """Per-step durations of the instance's only run (from STEP_SUCCESS events, in execution
    order) and the run's own start-to-end time."""
    from dagster import DagsterEventType

    runs = instance.get_runs(limit=1)
    if not runs:
        return {}, None
    run_id = runs[0].run_id
    steps: dict[str, float] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS):
        event = entry.dagster_event
        steps[event.step_key] = event.event_specific_data.duration_ms / 1000
    stats = instance.get_run_stats(run_id)
    job_seconds = stats.end_time - stats.start_time if stats.end_time and stats.start_time else None
    return steps, job_seconds


def task_run(selection: list[str] | None, workdir: Path) -> Result:
    """Materialize ``selection`` (the whole graph when None) on ``workdir``'s landing zone and
    lakehouse, in this process, and measure it."""
    from dagster import instance_for_test

    from fitness_assets.cli import run_graph
    from fitness_assets.settings import Settings, SparkEnv

    settings = Settings.from_env({
        "FITNESS_LANDING_ROOT": str(workdir / "landing"),
        "FITNESS_LAKEHOUSE_ROOT": str(workdir / "lakehouse"),
        "FITNESS_REFERENCE_DATE": REFERENCE_DATE,
    })
    # One Dagster instance per workdir, kept between runs as a deployment keeps its own: a
    # micro-batch's checks find the evaluations of the run before it.
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    with instance_for_test(temp_dir=str(home)) as instance:
        # Local Spark at the benchmark's driver memory, the code generation threshold and JIT as configured;
        # or the scenario's warm Spark Connect server.
        url, configured = os.environ.get(CONNECT_URL_ENV), SparkEnv.from_env()
        spark_env = (SparkEnv(mode="connect", connect_url=url, driver_memory=DRIVER_MEMORY) if url else
                     SparkEnv(driver_memory=DRIVER_MEMORY, compile_from_rows=configured.compile_from_rows,
                              jit=configured.jit))
        report = run_graph(selection, settings, spark_env, instance=instance)
        steps, job_seconds = _step_seconds(instance)
    _stop_spark_and_reap_jvm()
    return {
        "success": report.ok,
        "failed_steps": report.failed_steps,
        "checks_failed": [f"{c.asset} :: {c.check}" for c in report.checks if not c.passed],
        "wall_seconds": report.wall_seconds,
        "spark_start_seconds": report.spark_start_seconds,
        "job_seconds": job_seconds,
        "tables": report.tables,
        "steps": steps,
        "python_peak_mib": _peak_mib(resource.RUSAGE_SELF),
        # On Spark Connect the JVM is the server's, measured by the scenario.
        "jvm_peak_mib": None if url else _peak_mib(resource.RUSAGE_CHILDREN),
        "spark": "connect" if url else "local",
    }


class KafkaBenchFailed(RuntimeError):
    """The Kafka scenario's data or counts are not what was produced: its figures would lie."""


class StageClock:
    """Seconds and calls of wrapped callables, by stage. A wrapped call made inside another
    one of the same clock counts for the outer stage only (a delta-rs commit calls ``ensure``
    and reads the log, for instance), so the stages never overlap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._depth = 0

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
                self.calls[stage] = self.calls.get(stage, 0) + 1

        return timed


@contextmanager
def timed_calls(targets: list[tuple[StageClock, object, str, str]]) -> Iterator[None]:
    """Wrap ``owner.name`` with ``clock`` as ``stage`` for every target, for the block only
    (instance and class attributes are removed again, module attributes put back)."""
    undo: list[Callable[[], None]] = []
    try:
        for clock, owner, name, stage in targets:
            own = vars(owner).get(name, None) if hasattr(owner, "__dict__") else None
            setattr(owner, name, clock.wrap(stage, getattr(owner, name)))
            undo.append(functools.partial(setattr, owner, name, own) if own is not None
                        else functools.partial(delattr, owner, name))
        yield
    finally:
        for step in reversed(undo):
            step()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (the JVM is not reaped yet)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _jvm_pid() -> int | None:
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    return getattr(proc, "pid", None)


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def kafka_baseline(bootstrap_servers: str, high: dict[str, int], client: dict[str, Any]) -> Result:
    """A plain confluent-kafka loop: assign every partition from the beginning, ``consume``
    10,000 messages at a time until the high watermarks, ``json.loads`` every payload."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer({**client, "bootstrap.servers": bootstrap_servers})
    try:
        pending = {tuple(key.rsplit("/", 1)): end for key, end in high.items() if end > 0}
        records = undecodable = 0
        started = time.perf_counter()
        consumer.assign([TopicPartition(topic, int(partition), OFFSET_BEGINNING) for topic, partition in pending])
        deadline = started + 300
        while pending:
            if time.perf_counter() > deadline:
                raise KafkaBenchFailed(f"baseline: partitions {sorted(pending)} not read to their end in 300 s")
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                records += 1
                try:
                    json.loads(message.value())  # type: ignore[arg-type]
                except (TypeError, ValueError):  # a null or malformed payload: bronze quarantines it
                    undecodable += 1
                where = (message.topic(), str(message.partition()))
                if message.offset() + 1 >= pending.get(where, sys.maxsize):
                    del pending[where]
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return {"records": records, "undecodable": undecodable, "seconds": seconds,
            "records_per_second": records / seconds}


def _calendar_range(size: str) -> tuple[dt.date, dt.date]:
    """Days the simulation's record times fall on: members pre-registered up to 30 days
    before the first simulated day, and the simulated days themselves (a day on each side)."""
    config = _simulator_config(size)
    start = dt.date.fromisoformat(config.start_date)
    return start - dt.timedelta(days=31), start + dt.timedelta(days=config.days + 1)


def kafka_platform(bootstrap_servers: str, size: str, workdir: Path, produced: int) -> Result:
    """``ingest_kafka`` (validation without Spark) into a fresh bronze table, with a warm Spark
    session for the calendar read, timed as a whole and by stage (calls wrapped here; the
    product code is unchanged)."""
    from fitness_assets.lakehouse.spark import SparkSettings, get_session
    from fitness_assets.lakehouse.store import DeltaRsTableStore
    from fitness_assets.pipelines import bronze_kafka
    from fitness_assets.streaming.settings import KafkaSettings
    from fitness_assets.streaming.source import KafkaReader
    from fitness_assets.tables import DATE_LOOKUP, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR
    from fitness_assets.transforms.reference import date_lookup

    started = time.perf_counter()
    spark = get_session(SparkSettings(driver_memory=DRIVER_MEMORY))
    spark.range(1).count()  # warm: the JVM, the session and a first job
    spark_start = time.perf_counter() - started
    store = DeltaRsTableStore(str(workdir / "lakehouse"), lambda: spark)
    first_day, last_day = _calendar_range(size)
    store.overwrite(DATE_LOOKUP, date_lookup(spark, first_day, last_day))

    settings = KafkaSettings(bootstrap_servers=bootstrap_servers, poll_timeout_seconds=30)
    per_batch = settings.max_records_per_batch
    stages, batches = StageClock(), StageClock()
    with KafkaReader(settings) as reader:
        targets = [
            (batches, bronze_kafka, "_commit_batch", "commit_batch"),
            (stages, reader, "read", "kafka_read"),
            (stages, reader, "commit", "kafka_commit_and_lag"),
            (stages, reader, "lag", "kafka_commit_and_lag"),
            (stages, bronze_kafka, "validate_records", "validate_to_arrow"),
            (stages, store, "to_arrow", "calendar_and_arrow_casts"),
            (stages, store, "overwrite", "quarantine_commit"),
            (stages, store, "append", "bronze_commit"),
            (stages, store, "ensure", "delta_log_reads"),
            (stages, store, "transaction_version", "delta_log_reads"),
            (stages, store, "latest_commit_metadata", "delta_log_reads"),
        ]
        jvm = _jvm_pid()
        jvm_cpu, python_cpu = process_cpu_seconds(jvm) if jvm else 0.0, _self_cpu_seconds()
        with timed_calls(targets):
            started = time.perf_counter()
            report = bronze_kafka.ingest_kafka(store, spark, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
                                               max_records_per_batch=per_batch,
                                               max_batches=produced // per_batch + 2)
            seconds = time.perf_counter() - started
        jvm_cpu = process_cpu_seconds(jvm) - jvm_cpu if jvm else None
        python_cpu = _self_cpu_seconds() - python_cpu
    in_batch = sum(stages.seconds.get(s, 0.0) for s in ("quarantine_commit", "bronze_commit"))
    breakdown = dict(stages.seconds)
    # The rest of a commit: the load-time columns and the offsets' bookkeeping.
    breakdown["arrow_ops"] = max(0.0, batches.seconds.get("commit_batch", 0.0) - in_batch)
    breakdown["other"] = max(0.0, seconds - sum(breakdown.values()))
    written = report.rows_written + report.rows_quarantined
    if report.records != produced or written != produced or report.skipped_batches or sum(report.lag.values()):
        raise KafkaBenchFailed(
            f"Kafka -> bronze took in {report.records:,} records and wrote {report.rows_written:,} rows + "
            f"{report.rows_quarantined:,} quarantined = {written:,}, but {produced:,} were produced "
            f"(skipped batches {report.skipped_batches}, lag {report.lag}, lost {report.lost})")
    return {
        "records": report.records,
        "seconds": seconds,
        "records_per_second": report.records / seconds,
        "spark_start_seconds": spark_start,
        "max_records_per_batch": per_batch,
        "batches": report.batches,
        "rows_written": report.rows_written,
        "rows_quarantined": report.rows_quarantined,
        "quarantine_reasons": report.quarantine_reasons,
        "stage_seconds": dict(sorted(breakdown.items(), key=lambda item: -item[1])),
        "stage_calls": stages.calls,
        "python_cpu_seconds": python_cpu,
        "jvm_cpu_seconds": jvm_cpu,
    }


def task_kafka(size: str, workdir: Path) -> Result:
    """Produce ``workdir/landing/kafka_multiplex`` to an in-process mock broker, then read it
    all back twice: a plain consume-and-decode loop (the baseline) and ``ingest_kafka``."""
    from fitness_assets.streaming.broker import MockKafkaBroker
    from fitness_assets.streaming.producer import MULTIPLEX_FOLDER, multiplex_files, produce_files
    from fitness_assets.streaming.settings import KafkaSettings
    from fitness_assets.streaming.source import KafkaReader

    paths = multiplex_files(workdir / "landing" / MULTIPLEX_FOLDER)
    if not paths:
        raise KafkaBenchFailed(f"no multiplex files under {workdir / 'landing' / MULTIPLEX_FOLDER}")
    with MockKafkaBroker(port=0, partitions=KAFKA_PARTITIONS) as broker:
        servers = broker.bootstrap_servers
        started = time.perf_counter()
        stats = produce_files(servers, paths)
        produce_seconds = time.perf_counter() - started
        settings = KafkaSettings(bootstrap_servers=servers, group_id="fitness-bench-baseline")
        with KafkaReader(settings) as reader:
            marks = reader.watermarks()
        dropped = {key: low for key, (low, _) in marks.items() if low != 0}
        if dropped:
            raise KafkaBenchFailed(f"the mock broker dropped the oldest records of {dropped} (offsets below the "
                                   "low watermark; it keeps ~5 MiB per partition): produce less")
        held = sum(high for _, high in marks.values())
        if held != stats.produced_total:
            raise KafkaBenchFailed(f"the broker holds {held:,} records but {stats.produced_total:,} were produced")
        high = {key: end for key, (_, end) in marks.items()}
        # The baseline uses the reader's own client settings, so only the work differs.
        client = {k: v for k, v in settings.consumer_config().items() if k != "bootstrap.servers"}
        baselines = [kafka_baseline(servers, high, client) for _ in range(KAFKA_BASELINE_RUNS)]
        for run in baselines:
            if run["records"] != stats.produced_total:
                raise KafkaBenchFailed(f"baseline read {run['records']:,} of {stats.produced_total:,} records")
        platform_run = kafka_platform(servers, size, workdir, stats.produced_total)
    _stop_spark_and_reap_jvm()
    baseline = max(baselines, key=lambda run: run["records_per_second"])
    ratio = platform_run["records_per_second"] / baseline["records_per_second"]
    return {
        "success": True,
        "partitions": KAFKA_PARTITIONS,
        "produce": {"lines": stats.lines, "produced": stats.produced, "records": stats.produced_total,
                    "skipped": stats.skipped, "adjusted": stats.adjusted, "seconds": produce_seconds},
        "watermarks": {key: list(mark) for key, mark in marks.items()},
        "baseline": baseline | {"runs_records_per_second": [run["records_per_second"] for run in baselines],
                                "client_config": client},
        "platform": platform_run,
        "ratio": ratio,
        "meets_goal": ratio >= KAFKA_GOAL_RATIO,
        "python_peak_mib": _peak_mib(resource.RUSAGE_SELF),
        "jvm_peak_mib": _peak_mib(resource.RUSAGE_CHILDREN),
    }


def task_live(size: str, workdir: Path) -> Result:
    """The live platform with a real daemon: first fill of gold, then produced profile changes
    timed to bronze and to gold (see benchmarks.live)."""
    from benchmarks.live import measure_live_latency

    return measure_live_latency(workdir, rounds=LIVE_ROUNDS)


TASKS: dict[str, Callable[[str, Path], Result]] = {
    "simulate": task_simulate,
    "live": task_live,
    "stage": task_stage,
    "bronze": lambda size, workdir: task_run(BRONZE_SELECTION, workdir),
    "graph": lambda size, workdir: task_run(None, workdir),
    "kafka": task_kafka,
}
