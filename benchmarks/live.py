"""Latency of the live platform: from a record produced to Kafka to its effect in gold.

A real daemon on a temporary Dagster home, a warm Spark (Spark Connect, as ``make live`` runs),
the local broker, a tiny simulated chain to start from; then, one at a time, a profile change (CDC) moving a member to a new city is produced and
the time until ``gold/workout_bpm_summary`` shows the new city is measured, with no run launched
by hand. Called by ``benchmarks.tasks`` (task and scenario ``live``); prints nothing itself.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fitness_assets.devstack import (
    live_environment,
    profile_move,
    start_dagster,
    stop_process,
    table_rows,
    warm_spark,
)

SUMMARY = ("gold", "workout_bpm_summary")


def _wait(probe, timeout: float, daemon: subprocess.Popen, poll: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        if daemon.poll() is not None:
            raise RuntimeError("the Dagster daemon died")
        time.sleep(poll)
    raise TimeoutError(f"nothing after {timeout:.0f} s")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples, a measured value)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def measure_live_latency(workdir: Path, rounds: int = 5, timeout: float = 900, microbatch_seconds: int = 5,
                         warm: bool = True) -> dict[str, Any]:
    """First fill of gold from a tiny chain, then ``rounds`` produced profile changes: seconds
    from produce to the change visible in bronze, and in gold. ``warm=False`` gives every run
    its own local JVM instead of the Spark Connect server."""
    from confluent_kafka import Producer

    from fitness_assets.lakehouse.connect_server import free_port
    from fitness_assets.streaming.broker import MockKafkaBroker

    lake, landing, home = workdir / "lake", workdir / "landing", workdir / "dagster_home"
    with MockKafkaBroker(port=0) as broker:
        env = live_environment(os.environ, broker.bootstrap_servers, microbatch_seconds)
        env.update(FITNESS_LAKEHOUSE_ROOT=str(lake), FITNESS_LANDING_ROOT=str(landing), DAGSTER_HOME=str(home),
                   FITNESS_REFERENCE_DATE="2024-01-01", FITNESS_SPARK_DRIVER_MEMORY="1g")
        env.pop("FITNESS_SPARK_MODE", None)
        if not warm:
            env["FITNESS_SPARK_MODE"] = "local"
        spark = warm_spark(env, free_port(), workdir / "spark-connect.log")
        daemon = None
        try:
            subprocess.run([sys.executable, "-m", "fitness_assets.cli", "simulate", "--preset", "tiny",
                            "--kafka-bootstrap-servers", broker.bootstrap_servers], env=env, check=True,
                           capture_output=True)
            started = time.time()
            daemon = start_dagster(env, ui_port=None)
            summary = _wait(lambda: table_rows(lake, *SUMMARY), timeout, daemon, poll=2)
            first_fill = time.time() - started
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
            to_bronze, to_gold = [], []
            for n in range(rounds):
                profiles = {p["user_id"]: p for p in table_rows(lake, "silver", "user_profile")}
                members = sorted({r["user_id"] for r in summary if r["user_id"] in profiles})
                member = members[n % len(members)]
                city = f"Bench-{n}"
                change = profile_move(profiles[member], city, later_seconds=86_400 * (n + 1))
                producer.produce("user_info", json.dumps(change), key=str(member))
                producer.flush(30)
                produced = time.time()
                _wait(lambda c=city: [r for r in table_rows(lake, "bronze", "kafka_multiplex_bz")
                                      if r["topic"] == "user_info" and c in r["value"]], timeout, daemon, poll=0.5)
                to_bronze.append(time.time() - produced)
                summary = _wait(lambda m=member, c=city: [r for r in table_rows(lake, *SUMMARY)
                                                           if r["user_id"] == m and r["city"] == c]
                                and table_rows(lake, *SUMMARY), timeout, daemon, poll=0.5)
                to_gold.append(time.time() - produced)
        finally:
            if daemon is not None:
                stop_process(daemon)
            if spark is not None:
                spark.stop()
    return {
        "rounds": rounds, "microbatch_seconds": microbatch_seconds, "spark": "connect" if warm else "local",
        "first_fill_seconds": first_fill,
        "to_bronze_seconds": to_bronze, "to_gold_seconds": to_gold,
        "to_bronze_p50": statistics.median(to_bronze), "to_bronze_p95": percentile(to_bronze, 0.95),
        "to_gold_p50": statistics.median(to_gold), "to_gold_p95": percentile(to_gold, 0.95),
    }
