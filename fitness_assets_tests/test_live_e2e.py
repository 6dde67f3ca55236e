"""End to end with no run launched by hand: a real Dagster daemon on a temporary home, the
local Kafka-protocol broker, landing files, and runs on a warm Spark through Spark Connect (the
production path: Databricks Connect is Spark Connect). Records produced -> their effect in gold
within a bound, and a profile change (CDC) produced later -> the member's new city in gold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from fitness_assets.automation.maintenance import COMPACT_SCHEDULE, VACUUM_SCHEDULE
from fitness_assets.devstack import (
    live_environment,
    profile_move,
    start_dagster,
    stop_process,
    table_rows,
    warm_spark,
)
from fitness_assets.lakehouse.connect_server import free_port
from fitness_assets.streaming.broker import MockKafkaBroker

pytestmark = pytest.mark.slow

BOUND_SECONDS = 900  # generous: 2 cores, and other tests may share them


def _why(instance: DagsterInstance, run_id: str) -> str:
    """The failure events of a run, with the first lines of their errors (CI shows only this)."""
    lines = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event and event.event_type_value in ("STEP_FAILURE", "PIPELINE_FAILURE"):
            error = getattr(event.event_specific_data, "error", None)
            detail = error.to_string().strip().splitlines()[-3:] if error else []
            lines.append(" | ".join([entry.message or event.event_type_value, *detail]))
    return " || ".join(lines) or "no failure event recorded"


def _wait(what: str, probe, deadline: float, daemon: subprocess.Popen, home: Path):
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        assert daemon.poll() is None, "the daemon died"
        with DagsterInstance.from_config(str(home)) as instance:
            failed = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
            assert not failed, (f"a run failed while waiting for {what}: {failed[0].dagster_run.run_id}: "
                                + _why(instance, failed[0].dagster_run.run_id))
        time.sleep(5)
    raise AssertionError(f"timed out waiting for {what}")


def test_produced_records_reach_gold_and_a_profile_change_follows_without_a_manual_run(tmp_path):
    lake, landing, home = tmp_path / "lake", tmp_path / "landing", tmp_path / "dagster_home"
    with MockKafkaBroker(port=0) as broker:
        env = live_environment(os.environ, broker.bootstrap_servers, microbatch_seconds=5)
        env.update(FITNESS_LAKEHOUSE_ROOT=str(lake), FITNESS_LANDING_ROOT=str(landing), DAGSTER_HOME=str(home),
                   FITNESS_REFERENCE_DATE="2024-01-01")
        env.pop("FITNESS_SPARK_MODE", None)
        # Its log in a DAGSTER_HOME not made yet, as `make reset && make live` has it.
        spark = warm_spark(env, free_port(), home / "spark-connect.log")
        daemon = None
        try:
            assert env["FITNESS_SPARK_MODE"] == "connect"
            subprocess.run([sys.executable, "-m", "fitness_assets.cli", "simulate", "--preset", "tiny",
                            "--kafka-bootstrap-servers", broker.bootstrap_servers], env=env, check=True,
                           capture_output=True)
            started = time.time()
            daemon = start_dagster(env, ui_port=None)
            summary = _wait("workout summaries in gold", lambda: table_rows(lake, "gold", "workout_bpm_summary"),
                            started + BOUND_SECONDS, daemon, home)
            first_gold = time.time() - started
            profiles = {p["user_id"]: p for p in table_rows(lake, "silver", "user_profile")}
            member = next(r["user_id"] for r in summary if r["user_id"] in profiles)
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
            producer.produce("user_info", json.dumps(profile_move(profiles[member], "Moved-To-E2E")), key=str(member))
            producer.flush(30)
            produced = time.time()
            _wait("the profile change in gold",
                  lambda: [r for r in table_rows(lake, "gold", "workout_bpm_summary")
                           if r["user_id"] == member and r["city"] == "Moved-To-E2E"],
                  produced + BOUND_SECONDS, daemon, home)
            print(f"first gold after {first_gold:.0f} s; CDC change in gold {time.time() - produced:.0f} s "
                  "after it was produced")
        finally:
            if daemon is not None:
                stop_process(daemon)
            spark.stop()
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        # The maintenance schedules (hourly compaction at :15, the daily vacuum) run when the
        # test crosses their time; no run is launched by hand.
        assert runs and all(r.dagster_run.tags.get("dagster/sensor_name")
                            or r.dagster_run.tags.get("dagster/schedule_name") in (COMPACT_SCHEDULE, VACUUM_SCHEDULE)
                            for r in runs), \
            "every run was launched by a sensor, the automation sensor or a maintenance schedule"
