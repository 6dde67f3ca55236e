"""Crash tests with kill -9: a real `fitness-assets run` process (and its Spark JVM, its whole
process group) is SIGKILLed at random points of bronze, silver and gold, several times in a row
on the same lakehouse; a final rerun must leave every table equal to a clean run's, and a
further rerun must change no table version.

The points are random but seeded: the seed is printed (run with ``-s``) and given in every
failure message; ``FITNESS_KILL9_SEED=<seed>`` replays the same choices (the timing of a
machine under load still varies).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deltalake import DeltaTable

from fitness_assets.lakehouse.store import DeltaRsTableStore
from fitness_assets.simulator import SimulatorConfig
from fitness_assets.tables import ALL_TABLES
from fitness_assets_tests.helpers import deliver, stage, table_rows, versions

pytestmark = pytest.mark.slow

REFERENCE_DATE = "2024-01-01"
DATA_SEED = 5  # a tiny chain whose run writes every table (profile deletes included)
# Wall-clock columns: bronze and quarantine `load_time` (the time of ingestion). Nothing else
# depends on when a run happens (FITNESS_REFERENCE_DATE pins ages).
WALL_CLOCK = ("load_time",)
RUN_TIMEOUT = 900.0
# `    1.9 s  silver__gym_logs: ...`, `  FAILED    step: ...`, `  skipped   step (...)`
PROGRESS = re.compile(r"^\s+(?:[\d.]+ s|FAILED|skipped)\s+([A-Za-z0-9_]+)")
# Steps whose progress line is followed, in the in-process executor's order, by a silver write
# (heart_rate -> user_profile_history -> workouts, user_profile -> completed_workouts,
# completed_workouts' checks -> user_bins): a kill 0-0.5 s later lands in silver's writes or
# checks (2 s reached gold once steps took ~0.5 s, and the gold kill then found its table done).
# Where it really landed is printed (the last progress line and the commits of the run). Each
# anchor must be a step of the job (test_kill_anchors_are_steps_of_the_job): a name that is not
# never prints a line, and the run ends before the kill.
SILVER_ANCHORS = ("silver__heart_rate", "silver__user_profile_history", "silver__user_profile",
                  "silver__completed_workouts__checks")
GOLD_TABLES = tuple(f"{t.layer}/{t.name}" for t in ALL_TABLES if t.layer == "gold")
SETUP_OPERATIONS = {"CREATE TABLE", "ADD CONSTRAINT"}


@dataclass(frozen=True)
class KillPoint:
    layer: str
    after_line: str | None = None  # SIGKILL `delay` s after this step's progress line
    after_commit: str | None = None  # or after the run's first commit to this table (`layer/name`)
    data_only: bool = True  # ... counting only commits that write rows (not the create, a constraint)
    delay: float = 0.0
    # The first of these tables that does not exist yet when the run starts becomes `after_commit`
    # (a table an earlier kill already built gets no commit in a rerun with nothing new).
    candidates: tuple[str, ...] = ()

    def resolve(self, lakehouse: Path) -> KillPoint:
        if not self.candidates:
            return self
        fresh = [t for t in self.candidates if not (lakehouse / t / "_delta_log").is_dir()]
        assert fresh, f"{self.layer}: every candidate table exists already: {self.candidates}"
        return dataclasses.replace(self, after_commit=fresh[0], candidates=())

    def describe(self) -> str:
        kind = "data commit" if self.data_only else "commit (its creation)"
        table = self.after_commit or f"the first new of {', '.join(self.candidates)}"
        anchor = f"line {self.after_line}" if self.after_line else f"first {kind} of {table}"
        return f"{self.layer}: {self.delay:.2f} s after the {anchor}"


@dataclass
class Outcome:
    returncode: int | None
    killed: bool
    lines: list[tuple[float, str]] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)  # tables that got commits during the run

    def steps(self) -> list[str]:
        return [m.group(1) for _, line in self.lines if (m := PROGRESS.match(line))]

    def failures(self) -> list[str]:
        return [line.strip() for _, line in self.lines if line.lstrip().startswith(("FAILED", "skipped"))]


def _kill_points(rng: random.Random) -> list[KillPoint]:
    return [
        # Inside bronze__kafka_multiplex_bz: its quarantine rows are committed before its bronze
        # rows (and the bronze progress); 0-0.15 s later is between the two commits or just after.
        KillPoint("bronze (mid-step)", after_commit="quarantine/kafka_multiplex_bz", delay=rng.uniform(0, 0.15)),
        KillPoint("silver", after_line=rng.choice(SILVER_ANCHORS), delay=rng.uniform(0, 0.5)),
        # Inside a gold step: its table is created when the step plans its increment; the step
        # (read, aggregate, MERGE with the progress) takes 0.5-2.5 s here.
        KillPoint("gold (mid-step)", candidates=tuple(rng.sample(GOLD_TABLES, len(GOLD_TABLES))), data_only=False,
                  delay=rng.uniform(0, 0.8)),
    ]


def _log_files(lakehouse: Path) -> dict[str, set[str]]:
    """The commit files of every table, by `layer/name`."""
    out = {}
    for spec in ALL_TABLES:
        log = lakehouse / spec.layer / spec.name / "_delta_log"
        out[f"{spec.layer}/{spec.name}"] = {p.name for p in log.glob("*.json")} if log.is_dir() else set()
    return out


def _new_commits(table: Path, ignore: set[str], data_only: bool) -> int:
    """Commits of ``table`` not in ``ignore``; with ``data_only``, those that write rows (not
    the create or a constraint)."""
    log = table / "_delta_log"
    if not log.is_dir():
        return 0
    count = 0
    for path in log.glob("*.json"):
        if path.name in ignore:
            continue
        if not data_only:
            count += 1
            continue
        try:
            for line in path.read_text().splitlines():
                info = json.loads(line).get("commitInfo") if line.strip() else None
                if info is not None and info.get("operation") not in SETUP_OPERATIONS:
                    count += 1
        except (OSError, ValueError):
            continue  # commit files appear by rename, complete; be lenient anyway
    return count


def _group_alive(pgid: int) -> list[str]:
    """Processes (not zombies) left in the process group."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [f"group {pgid}"]
    alive = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(f"{entry.name} {stat[:stat.rindex(')') + 1]}")
    return alive


def _kill_group(pgid: int, timeout: float = 30.0) -> list[str]:
    """SIGKILL the whole group and wait until none of it is left; returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return []
        left = _group_alive(pgid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _cli_run(env: dict[str, str], lakehouse: Path, stderr_path: Path, kill: KillPoint | None = None,
             tag: str = "") -> Outcome:
    """`fitness-assets run` in its own process group; with ``kill``, SIGKILL the group there."""
    before = _log_files(lakehouse)
    anchor_table = lakehouse / kill.after_commit if kill and kill.after_commit else None
    with open(stderr_path, "ab") as err:
        err.write(f"\n===== {tag} =====\n".encode())
        err.flush()
        proc = subprocess.Popen([sys.executable, "-m", "fitness_assets.cli", "run"], env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True, bufsize=1, start_new_session=True)
    started = time.monotonic()
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put((time.monotonic() - started, line.rstrip("\n")))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    outcome = Outcome(returncode=None, killed=False)
    fire_at = None
    try:
        eof = False
        while not eof:
            if time.monotonic() - started > RUN_TIMEOUT:
                raise AssertionError(f"{tag}: `fitness-assets run` still running after {RUN_TIMEOUT:.0f} s")
            try:
                item = lines.get(timeout=0.01)
            except queue.Empty:
                item = ()
            if item is None:
                eof = True
            elif item:
                outcome.lines.append(item)
                m = PROGRESS.match(item[1])
                if kill and fire_at is None and kill.after_line and m and m.group(1) == kill.after_line:
                    fire_at = time.monotonic() + kill.delay
            if (kill and fire_at is None and anchor_table is not None
                    and _new_commits(anchor_table, before[kill.after_commit], kill.data_only) > 0):
                fire_at = time.monotonic() + kill.delay
            if fire_at is not None and time.monotonic() >= fire_at:
                os.killpg(proc.pid, signal.SIGKILL)
                outcome.killed = True
                break
        if kill and not outcome.killed:
            proc.wait(timeout=60)
            raise AssertionError(f"{tag}: the run ended (exit {proc.returncode}) before the kill point "
                                 f"{kill.describe()}; steps: {outcome.steps()}")
        outcome.returncode = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        left = _kill_group(proc.pid)
        if proc.poll() is None:
            proc.wait(timeout=30)
        proc.stdout.close()
    assert not left, f"{tag}: processes left behind after killing group {proc.pid}: {left}"
    after = _log_files(lakehouse)
    outcome.committed = {name: len(after[name] - before[name]) for name in after if after[name] - before[name]}
    return outcome


def _snapshot(store: DeltaRsTableStore) -> dict[str, list[tuple]]:
    return {spec.qualified_name: table_rows(store, spec, drop=WALL_CLOCK) for spec in ALL_TABLES}


def _definition(store: DeltaRsTableStore) -> dict[str, tuple]:
    """What a table is besides its rows: schema, partitioning, properties (CHECK constraints, CDF)."""
    out = {}
    for spec in ALL_TABLES:
        if not store.exists(spec):
            out[spec.qualified_name] = None
            continue
        dt = DeltaTable(store.location(spec))
        meta = dt.metadata()
        out[spec.qualified_name] = (dt.schema().to_arrow().names, list(meta.partition_columns),
                                    dict(sorted(meta.configuration.items())))
    return out


def _diff(expected: list[tuple], actual: list[tuple], limit: int = 5) -> str:
    from collections import Counter

    missing = list((Counter(expected) - Counter(actual)).elements())
    extra = list((Counter(actual) - Counter(expected)).elements())
    return (f"{len(expected)} rows expected, {len(actual)} found; missing {len(missing)} e.g. {missing[:limit]}; "
            f"extra {len(extra)} e.g. {extra[:limit]}")


def test_kill_anchors_are_steps_of_the_job(settings):
    from fitness_assets.definitions import ALL_ASSETS_JOB, build_definitions

    steps = {node.name for node in build_definitions(settings).resolve_job_def(ALL_ASSETS_JOB).nodes}
    assert set(SILVER_ANCHORS) <= steps, f"kill anchors that are not steps: {set(SILVER_ANCHORS) - steps}"


def test_kill9_at_random_points_then_rerun_equals_a_clean_run(tmp_path, settings, store, run):
    seed = int(os.environ.get("FITNESS_KILL9_SEED") or random.SystemRandom().randrange(1_000_000))
    rng = random.Random(seed)
    points = _kill_points(rng)
    print(f"\nkill -9 test: FITNESS_KILL9_SEED={seed}; points: " + "; ".join(p.describe() for p in points))

    staging = tmp_path / "staging"
    stage(SimulatorConfig.tiny(seed=DATA_SEED), staging)
    deliver(staging, Path(settings.landing_root))

    # The clean reference: the whole graph once, in-process, on its own lakehouse.
    started = time.monotonic()
    run()
    reference = _snapshot(store)
    reference_definition = _definition(store)
    assert all(reference[s.qualified_name] for s in ALL_TABLES), "the reference run left an empty table"
    print(f"reference run: {time.monotonic() - started:.1f} s")

    lakehouse = tmp_path / "crash_lakehouse"
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITNESS_", "DAGSTER_"))} | {
        "FITNESS_LANDING_ROOT": str(settings.landing_root),
        "FITNESS_LAKEHOUSE_ROOT": str(lakehouse),
        "FITNESS_REFERENCE_DATE": REFERENCE_DATE,
        "FITNESS_SPARK_DRIVER_MEMORY": "1g",
        "DAGSTER_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    crashed = DeltaRsTableStore(str(lakehouse), lambda: None)
    stderr_path = tmp_path / "cli-stderr.log"
    context = f"FITNESS_KILL9_SEED={seed}, stderr in {stderr_path}"
    history, finished_steps = [], []
    for n, planned in enumerate(points, 1):
        point = planned.resolve(lakehouse)
        started = time.monotonic()
        outcome = _cli_run(env, lakehouse, stderr_path, point, tag=f"kill {n}")
        steps = outcome.steps()
        last = outcome.lines[-1][1].strip() if outcome.lines else "(no progress line yet)"
        entry = (f"kill {n} ({point.describe()}) after {time.monotonic() - started:.1f} s; "
                 f"{len(steps)} steps had finished, last line: {last!r}; "
                 f"commits in this run: {outcome.committed or 'none'}")
        history.append(entry)
        finished_steps.append(len(steps))
        print(entry)
        # A rerun after a kill must not fail any step before it is killed itself.
        assert not outcome.failures(), f"{entry}: {outcome.failures()} ({context}; earlier: {history[:-1]})"

    started = time.monotonic()
    final = _cli_run(env, lakehouse, stderr_path, tag="final rerun")
    print(f"final rerun: {time.monotonic() - started:.1f} s, exit {final.returncode}")
    assert final.returncode == 0, (f"the rerun after the kills failed (exit {final.returncode}): "
                                   f"{final.failures()}; {context}; kills: {history}")
    differences = {}
    for spec in ALL_TABLES:
        actual = table_rows(crashed, spec, drop=WALL_CLOCK)
        if actual != reference[spec.qualified_name]:
            differences[spec.qualified_name] = _diff(reference[spec.qualified_name], actual)
    assert not differences, f"tables differ from a clean run after kill -9: {differences}; {context}; kills: {history}"
    definition = _definition(crashed)
    assert definition == reference_definition, (
        "table definitions differ from a clean run's: "
        f"{ {k: (reference_definition[k], v) for k, v in definition.items() if v != reference_definition[k]} }; "
        f"{context}; kills: {history}")

    before = versions(crashed)
    started = time.monotonic()
    again = _cli_run(env, lakehouse, stderr_path, tag="no-op rerun")
    print(f"no-op rerun: {time.monotonic() - started:.1f} s, exit {again.returncode}")
    assert again.returncode == 0, f"the no-op rerun failed: {again.failures()}; {context}"
    assert versions(crashed) == before, (f"a rerun with nothing new changed tables: {again.committed}; "
                                         f"{context}; kills: {history}")
    # The killed runs do not stay STARTED: the next CLI run marked them failed.
    from dagster import DagsterInstance, DagsterRunStatus

    with DagsterInstance.from_config(str(home)) as instance:
        statuses = [r.dagster_run.status for r in instance.get_run_records()]
    assert DagsterRunStatus.STARTED not in statuses, statuses
    # A kill that landed after every step had finished (a late point in the last gold step, on a
    # quick machine) found a run that was done: it may rightly be a success.
    interrupted = sum(1 for n in finished_steps if n < len(final.steps()))
    assert statuses.count(DagsterRunStatus.FAILURE) >= interrupted, (statuses, history, len(final.steps()))
