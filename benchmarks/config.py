"""Sizes, limits and thresholds shared by the benchmark modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fitness_assets.lakehouse.spark import DEFAULT_DRIVER_MEMORY
from fitness_assets.simulator import SimulatorConfig

#: The repository root (the worker subprocess runs here, so ``python -m benchmarks`` finds the package).
ROOT = Path(__file__).resolve().parent.parent

BRONZE_SELECTION = [
    "reference/date_lookup",
    "bronze/registered_users_bz",
    "bronze/gym_logins_bz",
    "bronze/kafka_multiplex_bz",
]
BRONZE_SOURCES = ("registered_users_bz", "gym_logins_bz", "kafka_multiplex_bz")
SOURCE_FOLDERS = ("registered_users", "gym_logins", "kafka_multiplex")
REFERENCE_DATE = "2024-01-01"
DRIVER_MEMORY = DEFAULT_DRIVER_MEMORY  # the project's default: what `make demo` and a run get
MICRO_BATCHES = 100
#: The micro-batch: the same batch (slice of the clock) at every size. Batches are slices of
#: the clock, so the last ones cover the night and hold almost nothing; 87 is the latest batch
#: of the 5M simulation holding 0.75-1.5 % of its lines (0.76 %), an afternoon.
MICRO_BATCH = 87
SMALL = "500k"
LARGE = "5M"
#: Kafka scenario sizes: the mock broker silently drops a partition's data beyond ~5 MiB, so
#: the volume stays far below the other scenarios' (~270k and ~420k records on 4 x 3 partitions).
KAFKA_SMALL = "250k"
KAFKA_LARGE = "400k"
SIZES: dict[str, int | None] = {"tiny": None, KAFKA_SMALL: 250_000, KAFKA_LARGE: 400_000, SMALL: 500_000,
                                LARGE: 5_000_000}
#: Days the micro-batch scenario simulates at every size: the large size's period, so that
#: batch k is the same slice of the clock (same kinds of events) at both sizes and only the
#: members, and so the tables, differ. With each size's own period (7 days at 500k, 14 at 5M)
#: the 500k batch was an evening without workouts and its run skipped half the graph.
MICRO_DAYS = SimulatorConfig.scaled(SIZES[LARGE]).days
KAFKA_PARTITIONS = 4
#: The issue's goal: Kafka -> bronze at least half as fast as a plain consume-and-decode loop.
KAFKA_GOAL_RATIO = 0.5
#: The baseline is cheap and noisy on a shared machine: the best of this many runs counts.
KAFKA_BASELINE_RUNS = 3
#: A scenario slower than this is called out in RESULTS.md rather than silently shrunk.
SLOW_SCENARIO_SECONDS = 15 * 60
#: Below this share of busy CPU the machine counts as quiet enough to start a run.
QUIET_SHARE = 0.15
#: Runs reported with a warning when other processes used more than this share of the CPU.
FOREIGN_CPU_WARNING = 0.10
MEASURED_TASKS = ("bronze", "graph", "kafka", "live")
#: How a scenario points its run tasks at its warm Spark Connect server (unset: local Spark).
CONNECT_URL_ENV = "FITNESS_BENCH_SPARK_CONNECT_URL"
#: Profile changes produced one after another in the live scenario (each timed to gold).
LIVE_ROUNDS = 6
#: How many times a scenario is run again when other processes disturbed one of its runs.
CONTENTION_RETRIES = 1
DEFAULT_RESULTS_DIR = ROOT / "benchmarks"
#: A headline figure this much worse than in the previous committed run is flagged REGRESSION.
REGRESSION_SHARE = 0.20

Result = dict[str, Any]
