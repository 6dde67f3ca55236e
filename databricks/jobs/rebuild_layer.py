"""Entry point of the bundle's ``rebuild_layer`` job on a Databricks job cluster: drop a layer's
tables and everything downstream, and materialize them again with the project's own assets.

Run by Dagster (``fitness_assets.databricks.pipes``) it speaks Dagster Pipes: context and
messages through a Unity Catalog volume, logs and one report of the rebuilt tables (asset
key, Delta version, rows) back to the Dagster run, which records their materializations.
Run on its own (``databricks bundle run rebuild_layer``, or from the Jobs UI) it does the same
work and prints the report; dagster-pipes then only warns that no orchestrator is listening.

The cluster's environment (set by the bundle per target) says where things are:
FITNESS_ENV, FITNESS_CATALOG, FITNESS_LANDING_ROOT, FITNESS_TABLE_BACKEND=spark-delta,
FITNESS_SPARK_MODE=databricks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from dagster_pipes import (
    PipesCliArgsParamsLoader,
    PipesEnvVarParamsLoader,
    PipesUnityCatalogVolumesContextLoader,
    PipesUnityCatalogVolumesMessageWriter,
    open_dagster_pipes,
)

MESSAGE_KIND = "fitness_rebuild"  # fitness_assets.databricks.pipes.MESSAGE_KIND
LAYER_SCHEMAS = ("reference", "bronze", "quarantine", "silver", "gold")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", required=True, help="bronze | silver | gold")
    parser.add_argument("--dry-run", action="store_true", help="report what would be dropped and rebuilt")
    args, _ = parser.parse_known_args(argv)  # Pipes' own --dagster-pipes-* arguments pass through
    return args


def params_loader():
    """Pipes' bootstrap comes as task parameters on an existing cluster, as environment
    variables on a job cluster (PipesDatabricksClient's two ways)."""
    if any(a.startswith("--dagster-pipes-context") for a in sys.argv):
        return PipesCliArgsParamsLoader()
    return PipesEnvVarParamsLoader()


def run(layer: str, dry_run: bool, log) -> dict:
    from fitness_assets.databricks.rebuild import plan, rebuild

    intended = plan(layer)
    log(f"rebuild of {layer}: drops {', '.join(intended['drops'])}; materializes {', '.join(intended['materializes'])}")
    if dry_run:
        return {"kind": MESSAGE_KIND, "layer": layer, "dry_run": True, "plan": intended, "tables": []}

    from pyspark.sql import SparkSession

    from fitness_assets.cli import prepare_graph
    from fitness_assets.lakehouse.store import SparkDeltaTableStore

    catalog = os.environ.get("FITNESS_CATALOG") or None
    if os.environ.get("FITNESS_TABLE_BACKEND") != "spark-delta" or not catalog:
        raise SystemExit("the rebuild runs on Unity Catalog: set FITNESS_TABLE_BACKEND=spark-delta and "
                         "FITNESS_CATALOG in the job cluster's environment (the bundle does)")
    schemas = {layer: os.environ.get(f"FITNESS_SCHEMA_{layer.upper()}", layer) for layer in LAYER_SCHEMAS}
    store = SparkDeltaTableStore(lambda: SparkSession.builder.getOrCreate(), catalog, schemas)

    from dagster import DagsterInstance

    def prepare(selection):
        run_graph = prepare_graph(list(selection))  # fails on the configuration before any drop

        def run_selection():
            # The run's record lives in the orchestrating Dagster (through Pipes); here a
            # throw-away instance, nothing written to the cluster's disk.
            report = run_graph(DagsterInstance.ephemeral())
            log(report.render())
            return report.success

        return run_selection

    tables = rebuild(layer, store, prepare)
    return {"kind": MESSAGE_KIND, "layer": layer, "dry_run": False, "plan": intended, "tables": tables}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    loader = params_loader()
    if not loader.is_dagster_pipes_process():
        result = run(args.layer, args.dry_run, print)
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    with open_dagster_pipes(params_loader=loader, context_loader=PipesUnityCatalogVolumesContextLoader(),
                            message_writer=PipesUnityCatalogVolumesMessageWriter()) as pipes:
        layer = pipes.get_extra("layer") if "layer" in pipes.extras else args.layer
        dry_run = bool(pipes.extras.get("dry_run", args.dry_run))
        result = run(layer, dry_run, pipes.log.info)
        pipes.report_custom_message(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
