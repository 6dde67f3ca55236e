"""`fitness-assets`: simulate landing data, run the asset graph in one process, report, reset."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from fitness_assets.settings import DEFAULT_DATA_ROOT, Settings, SparkEnv

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
    truth = Simulator(config).write_all(settings.landing_root)
    print(f"Simulated {truth.counts.bpm_readings:,} heart-rate readings, {truth.counts.members} members into "
          f"{settings.landing_root} in {time.perf_counter() - started:.1f} s")


def _ensure_dagster_home() -> None:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DATA_ROOT / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")


def run_graph(selection: list[str] | None = None, settings: Settings | None = None,
              spark_env: SparkEnv | None = None, instance=None):
    """Materialize ``selection`` (asset key strings like ``silver/users``; all when empty) with
    checks, in this process, and return the report."""
    from dagster import AssetKey, AssetSelection, DagsterInstance

    from fitness_assets import report as rpt
    from fitness_assets.definitions import ALL_ASSETS_JOB, build_definitions
    from fitness_assets.headlines import headlines

    started = time.perf_counter()
    defs = build_definitions(settings, spark_env)
    resources = defs.resources
    spark_started = time.perf_counter()
    resources["spark"].session()
    spark_seconds = time.perf_counter() - spark_started
    job = defs.resolve_job_def(ALL_ASSETS_JOB)
    keys = None
    if selection:
        # A bronze asset writes its quarantine table in the same step: select both together.
        chosen = AssetSelection.assets(*[AssetKey.from_user_string(s) for s in selection])
        keys = list(chosen.required_multi_asset_neighbors().resolve(defs.resolve_asset_graph()))
    if instance is None:
        _ensure_dagster_home()
        instance = DagsterInstance.get()
    result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
    store = resources["lakehouse"].store(resources["spark"])
    report = rpt.RunReport(
        success=result.success,
        wall_seconds=0.0,
        spark_start_seconds=spark_seconds,
        tables=rpt.table_rows(store),
        quarantine_reasons=rpt.quarantine_reasons(store),
        checks=[rpt.CheckOutcome(e.asset_key.to_user_string(), e.check_name, e.passed, e.severity.value)
                for e in result.get_asset_check_evaluations()],
        headlines=headlines(store, resources["spark"].session()),
        failed_steps=[e.step_key for e in result.all_events if e.is_step_failure],
    )
    report.wall_seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fitness-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="write simulated landing files")
    demo = sub.add_parser("demo", help="simulate a small chain, run the whole graph, report")
    for p in (sim, demo):
        p.add_argument("--preset", choices=sorted(PRESETS), default="tiny" if p is demo else "small")
        p.add_argument("--readings", type=int, default=None, help="about this many heart-rate readings")
        p.add_argument("--batches", type=int, default=1, help="split the data into this many file batches")
        p.add_argument("--seed", type=int, default=42)
    run = sub.add_parser("run", help="materialize assets (default: all) on the files the landing root holds")
    run.add_argument("--select", default="", help="comma-separated asset keys, e.g. bronze/gym_logins_bz")
    sub.add_parser("reset", help="delete the landing zone, the lakehouse and Dagster's local state")
    args = parser.parse_args(argv)
    settings = Settings.from_env()

    if args.command == "reset":
        for path in (settings.landing_root, settings.lakehouse_root,
                     os.environ.get("DAGSTER_HOME", str(DEFAULT_DATA_ROOT / "dagster_home"))):
            shutil.rmtree(path, ignore_errors=True)
            print(f"removed {path}")
        return 0
    if args.command in ("simulate", "demo"):
        _simulate(args, settings)
        if args.command == "simulate":
            return 0
    selection = [s for s in getattr(args, "select", "").split(",") if s]
    report = run_graph(selection, settings)
    print(report.render())
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
