"""``python -m benchmarks``: the command line. Without ``--task`` it orchestrates every
scenario and writes the results; with ``--task`` it is the worker process running one task."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import benchmarks
from benchmarks.compare import load_previous, render_comparison
from benchmarks.config import DEFAULT_RESULTS_DIR, KAFKA_SMALL, QUIET_SHARE, SIZES, SMALL, Result
from benchmarks.contention import machine_facts
from benchmarks.report import previous_scenarios, summarize, write_results
from benchmarks.scenarios import FAMILIES, TaskOptions, run_scenario, scenarios
from benchmarks.tasks import TASKS


def orchestrate(quick: bool, results_dir: Path, options: TaskOptions, only: list[str] | None = None) -> int:
    """Run every scenario, write results.json and RESULTS.md, print the table, ending with the
    comparison against the previous committed run.

    The files are rewritten after every scenario (marked incomplete until the end), so an
    interrupted run still leaves what it measured.
    """
    started = time.perf_counter()
    planned = scenarios(quick, only)
    previous = load_previous(results_dir)  # before results.json is rewritten
    kept = previous_scenarios(results_dir, only)
    report: Result = {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "quick": quick,
        "only": only,
        "complete": False,
        "machine": machine_facts(),
        "total_seconds": 0.0,
        "summary": {},
        "scenarios": [],
    }
    measured: list[Result] = []
    for scenario in planned:
        measured.append(run_scenario(scenario, options) | {"date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()})
        report.update(scenarios=kept + measured, complete=len(measured) == len(planned),
                      total_seconds=time.perf_counter() - started, summary=summarize(kept + measured))
        markdown = write_results(report, results_dir, render_comparison(previous, report["summary"], measured))
    print(markdown)
    return 1 if any("error" in r for r in report["scenarios"]) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=benchmarks.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only the tiny and {SMALL} sizes ({KAFKA_SMALL} for kafka)")
    parser.add_argument("--only", nargs="+", choices=FAMILIES, metavar="FAMILY",
                        help=f"run only these scenario families ({', '.join(FAMILIES)})")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                        help="where results.json and RESULTS.md go (default: benchmarks/)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one task")
    parser.add_argument("--quiet-wait", type=float, default=600,
                        help="before each run, wait up to this many seconds for other processes to leave "
                             f"the CPU (below {QUIET_SHARE:.0%}% busy); 0 to start at once")
    worker = parser.add_argument_group("one task in this process (used by the orchestrator)")
    worker.add_argument("--task", choices=sorted(TASKS))
    worker.add_argument("--size", choices=list(SIZES), default=SMALL)
    worker.add_argument("--workdir", type=Path)
    worker.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.task is None:
        return orchestrate(args.quick, args.results_dir, TaskOptions(args.timeout, args.quiet_wait), args.only)
    if args.workdir is None or args.out is None:
        parser.error("--task needs --workdir and --out")
    result = TASKS[args.task](args.size, args.workdir)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
