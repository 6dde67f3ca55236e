"""The project's Dagster instance settings (``$DAGSTER_HOME/dagster.yaml``).

- One run at a time: every run writes Delta tables, and runs that write the same tables must
  never overlap (the table store would retry conflicting commits, but two Spark JVMs on a
  2-core machine only slow each other down).
- Run monitoring: a run stuck starting, or running past an hour, is marked failed. The default
  run launcher cannot tell a dead run worker from a live one, so :func:`fail_dead_runs` (called
  by the CLI before each run and by the sensors on each tick) marks a STARTED run failed as soon
  as every process that wrote its events is gone from this machine (kill -9, OOM).
- Run retries: on, with no retry by default. The automation sensor's runs carry
  ``dagster/max_retries`` (``AUTOMATION_RUN_RETRIES``), so the daemon runs a failed automation
  run again from its failure (a killed run worker, a Spark server restarted mid-run); nothing
  else would request it until new data arrives or the freshness window runs out. The landing
  and Kafka sensors request their own failed runs again (their cursor knows the position), so
  their runs carry no such tag.
- No telemetry, and no "join the community" dialog over the UI.

Keys already in an existing file are left as they are, with its comments: a deployment may
tune them; missing keys are appended. A file that limits runs the older way (``run_queue``,
``run_coordinator``) keeps its own limit: Dagster refuses it beside ``concurrency``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from fitness_assets.processes import alive
from fitness_assets.settings import DEFAULT_DATA_ROOT, ConfigError

INSTANCE_SETTINGS: dict[str, Any] = {
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
    "concurrency": {"runs": {"max_concurrent_runs": 1}},
    "run_monitoring": {"enabled": True, "start_timeout_seconds": 180, "poll_interval_seconds": 30,
                       "max_resume_run_attempts": 0, "max_runtime_seconds": 3600},
    "run_retries": {"enabled": True, "max_retries": 0},
}
AUTOMATION_RUN_RETRIES = 2


def dagster_home() -> Path:
    """``DAGSTER_HOME``, made absolute (Dagster needs it so), ``.data/dagster_home`` when unset
    or blank; a ``ConfigError`` when it names something that is not a folder."""
    home = Path((os.environ.get("DAGSTER_HOME") or "").strip() or DEFAULT_DATA_ROOT / "dagster_home").absolute()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"DAGSTER_HOME ({home}) is not a folder: point it at a folder for Dagster's runs and events")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def ensure_instance(home: Path | None = None) -> Path:
    """Create ``home`` with the project's ``dagster.yaml``; add missing keys to an existing one."""
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    text = config.read_text() if config.exists() else ""
    current = yaml.safe_load(text) or {}
    missing = {key: value for key, value in INSTANCE_SETTINGS.items() if key not in current}
    if "run_queue" in current or "run_coordinator" in current:
        # The file limits runs the older way; Dagster refuses both ways in one file.
        missing.pop("concurrency", None)
    if missing:  # appended: the file's own keys, order and comments stay as they are
        config.write_text(text + ("" if not text or text.endswith("\n") else "\n") + yaml.safe_dump(missing, sort_keys=False))
    return config


EXECUTION_EVENTS = (DagsterEventType.RUN_START.value, DagsterEventType.STEP_START.value)


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed every STARTED run whose executing processes (the pids on its run- and
    step-start events) are all gone.

    The instance is this machine's (SQLite under DAGSTER_HOME), so its runs' pids are this
    machine's. A pid reused by another process keeps the run STARTED: conservative, never wrong."""
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED]), limit=50):
        run = record.dagster_run
        # The processes that executed it (the run worker, step workers), not the daemon that
        # queued and launched it, whose events carry its own, living pid.
        pids = {e.dagster_event.pid for e in instance.all_logs(run.run_id)
                if e.dagster_event and e.dagster_event.pid and e.dagster_event.event_type_value in EXECUTION_EVENTS}
        if not pids or any(alive(pid) for pid in pids):
            continue
        # A run that ended normally records its end before its process exits, so the status
        # read *after* seeing the process gone is final: a run that finished while we looked
        # is left as it ended, not marked failed.
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != DagsterRunStatus.STARTED:
            continue
        instance.report_run_failed(current, f"the run's process ({', '.join(map(str, sorted(pids)))}) is gone "
                                            "(killed or out of memory): marked failed by a later run")
        failed.append(run.run_id)
    return failed
