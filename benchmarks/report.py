"""What a run's results say: the headline figures derived from the scenarios' raw results,
RESULTS.md rendered from them (ending with the comparison against the previous committed run),
and both files written."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.config import (
    FOREIGN_CPU_WARNING,
    KAFKA_BASELINE_RUNS,
    KAFKA_GOAL_RATIO,
    KAFKA_PARTITIONS,
    LARGE,
    MICRO_BATCH,
    MICRO_BATCHES,
    MICRO_DAYS,
    SLOW_SCENARIO_SECONDS,
    SMALL,
    Result,
)


def _by(results: list[Result], name: str) -> dict[str, Result]:
    return {r["size"]: r for r in results if r["name"] == name and "error" not in r}


def step_split(run: Result) -> Result:
    """Seconds spent in asset steps and in asset-check steps of a run.

    An asset's step key is its table's ``layer__name`` (a bronze multi-asset also writes the
    quarantine table); every other step evaluates checks.
    """
    asset_steps = {name.replace(".", "__") for name in run["tables"]}
    assets = sum(seconds for step, seconds in run["steps"].items() if step in asset_steps)
    return {"asset_steps_seconds": assets, "check_steps_seconds": sum(run["steps"].values()) - assets,
            "steps": len(run["steps"])}


def kafka_summary(r: Result) -> Result:
    """The Kafka scenario's headline: both rates, their ratio against the goal, the stages."""
    run, platform_run, baseline = r["run"], r["run"]["platform"], r["run"]["baseline"]
    stages = platform_run["stage_seconds"]
    return {
        "readings": r["data"]["readings"],
        "records": run["produce"]["records"],
        "partitions": run["partitions"],
        "produce_seconds": run["produce"]["seconds"],
        "baseline_seconds": baseline["seconds"],
        "baseline_records_per_second": baseline["records_per_second"],
        "platform_seconds": platform_run["seconds"],
        "platform_records_per_second": platform_run["records_per_second"],
        "ratio": run["ratio"],
        "goal_ratio": KAFKA_GOAL_RATIO,
        "meets_goal": run["meets_goal"],
        "spark_start_seconds": platform_run["spark_start_seconds"],
        "max_records_per_batch": platform_run["max_records_per_batch"],
        "batches": platform_run["batches"],
        "rows_written": platform_run["rows_written"],
        "rows_quarantined": platform_run["rows_quarantined"],
        "stage_seconds": stages,
        "dominant_stage": max(stages, key=stages.__getitem__) if stages else None,
        "python_cpu_seconds": platform_run["python_cpu_seconds"],
        "jvm_cpu_seconds": platform_run["jvm_cpu_seconds"],
        "python_peak_mib": run["python_peak_mib"],
        "jvm_peak_mib": run["jvm_peak_mib"],
    }


#: What each stage of the Kafka -> bronze ingestion is, for RESULTS.md.
KAFKA_STAGES = {
    "kafka_read": "consuming the batch into Python columns (KafkaReader.read)",
    "validate_to_arrow": "payload JSON parse, validation and shaping into the bronze and quarantine Arrow tables "
                         "(kafka_arrow.validate_records, no Spark)",
    "calendar_and_arrow_casts": "reading the calendar (once, via Spark) and casting Arrow tables to the table schemas",
    "arrow_ops": "load-time columns and the rest of a commit's Arrow work",
    "quarantine_commit": "the quarantine replace-where commit (delta-rs)",
    "bronze_commit": "the bronze append commit with the offsets (delta-rs)",
    "delta_log_reads": "reading positions and app transactions from the Delta log",
    "kafka_commit_and_lag": "committing consumer-group offsets and computing the lag",
    "other": "the rest",
}


def summarize(results: list[Result]) -> Result:
    """The headline figures, derived from the scenarios' raw results."""
    bronze = _by(results, "bronze")
    graph = _by(results, "graph")
    micro = _by(results, "micro_batch")
    warm = _by(results, "micro_batch_warm")
    summary: Result = {
        "bronze_throughput": {
            size: {
                "readings": r["data"]["readings"],
                "records": r["records"],
                "simulate_seconds": r["data"]["simulate_seconds"],
                "wall_seconds": r["run"]["wall_seconds"],
                "spark_start_seconds": r["run"]["spark_start_seconds"],
                "records_per_second": r["records_per_second"],
                "records_per_second_excl_spark_start": r["records_per_second_excl_spark_start"],
                "python_peak_mib": r["run"]["python_peak_mib"],
                "jvm_peak_mib": r["run"]["jvm_peak_mib"],
            }
            for size, r in bronze.items()
        },
        "whole_graph": {
            size: {
                "readings": r["data"]["readings"],
                "wall_seconds": r["run"]["wall_seconds"],
                "job_seconds": r["run"]["job_seconds"],
                "spark_start_seconds": r["run"]["spark_start_seconds"],
                "spark_start_share": r["run"]["spark_start_seconds"] / r["run"]["wall_seconds"],
                **step_split(r["run"]),
                "python_peak_mib": r["run"]["python_peak_mib"],
                "jvm_peak_mib": r["run"]["jvm_peak_mib"],
                "runs_wall_seconds": r.get("runs_wall_seconds"),
            }
            for size, r in graph.items()
        },
        "micro_batch": {},
        "micro_batch_warm": {},
    }
    for name, scenario in (("micro_batch", micro), ("micro_batch_warm", warm)):
        for size, r in scenario.items():
            summary[name][size] = micro_batch_summary(r, graph.get(size))
    summary["kafka_bronze"] = {size: kafka_summary(r) for size, r in _by(results, "kafka").items()}
    summary["live_latency"] = {size: {k: v for k, v in r["run"].items() if not isinstance(v, list)}
                               | {"to_gold_seconds": r["run"]["to_gold_seconds"]}
                               for size, r in _by(results, "live").items()}
    if SMALL in summary["micro_batch"] and LARGE in summary["micro_batch"]:
        small, large = summary["micro_batch"][SMALL], summary["micro_batch"][LARGE]
        summary["micro_batch_ratio"] = {
            "wall": large["wall_seconds"] / small["wall_seconds"],
            "wall_excl_spark_start": large["wall_seconds_excl_spark_start"] / small["wall_seconds_excl_spark_start"],
        }
    return summary


def micro_batch_summary(r: Result, full: Result | None) -> Result:
    """A micro-batch scenario's figures; its share is of the local full refresh at its size."""
    run = r["run"]
    return {
        "readings": r["data"]["readings"],
        "batch": r["data"]["micro_batch"],
        "batch_share_of_lines": r["data"]["micro_batch_share"],
        "last_batch_share_of_lines": r["data"].get("last_batch_share"),
        "table_share_before": r["data"].get("share_before_micro_batch"),  # absent in older results
        "catch_up_wall_seconds": r["catch_up_run"]["wall_seconds"],
        "wall_seconds": run["wall_seconds"],
        "wall_seconds_excl_spark_start": run["wall_seconds"] - run["spark_start_seconds"],
        "job_seconds": run["job_seconds"],
        "share_of_full_refresh": run["wall_seconds"] / full["run"]["wall_seconds"] if full else None,
        "python_peak_mib": run["python_peak_mib"],
        "jvm_peak_mib": run["jvm_peak_mib"],
        **step_split(run),
        "slowest_steps": dict(sorted(run["steps"].items(), key=lambda item: -item[1])[:6]),
        "first_step": next(iter(run["steps"]), None),
        "spark": run.get("spark", "local"),
    }


def _pct(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def _codegen(machine: dict) -> str:
    """How the benchmark's steps chose compiled or interpreted queries (absent from older runs)."""
    rows = machine.get("compile_from_rows")
    if rows is None:
        return ""
    compiled = ", every query compiled" if rows == 0 else f", a step compiled from {rows:,} rows read"
    jvm = f", JIT {machine['jit']}, `{machine['gc']}`" if "jit" in machine else ""
    return compiled + jvm


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render(report: Result, comparison: list[str] | None = None) -> str:
    """RESULTS.md: the date, the machine, and every headline figure as small tables; then the
    ``comparison`` section's lines (benchmarks.compare), if any."""
    m = report["machine"]
    s = report["summary"]
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {report['date']} ({'quick' if report['quick'] else 'full'} run"
        f"{' of ' + ', '.join(report['only']) + ' only; the other sections are from the previous run' if report.get('only') else ''}, "
        f"{report['total_seconds'] / 60:.1f} min in all{'' if report['complete'] else '; INCOMPLETE, still running'})",
        f"- Machine: {m['nproc']} cores (`nproc`), {_fmt(m['memory_total_gib'])} GiB total / "
        f"{_fmt(m['memory_available_gib'])} GiB available (`free`); Python {m['python']}, "
        f"pyspark {m['pyspark']}, {m['java']}; Spark {m['spark_master']}, driver memory {m['driver_memory']}"
        f"{'' if 'class_archive' not in m else ', with the class archive' if m['class_archive'] else ', no class archive'}"
        f"{_codegen(m)}",
        f"- Code: commit {m.get('commit')}{' with uncommitted changes' if m.get('uncommitted_changes') else ''}",
        "- Each run is a fresh process with a fresh JVM on a fresh lakehouse under /tmp; wall time is "
        "`run_graph`'s (definitions, Spark start-up, the Dagster job with its checks, the row counts "
        "of the report); \"job\" is the Dagster run alone. Simulation is timed apart and not counted.",
        "",
        "## Bronze ingestion (reference + 3 bronze assets with quarantine)",
        "",
        "| size | readings | records | simulate s | wall s | Spark start s | records/s | records/s excl. start "
        "| Python peak MiB | JVM peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, b in s["bronze_throughput"].items():
        lines.append(
            f"| {size} | {b['readings']:,} | {b['records']:,} | {_fmt(b['simulate_seconds'])} | "
            f"{_fmt(b['wall_seconds'])} | {_fmt(b['spark_start_seconds'])} | {_fmt(b['records_per_second'], 0)} | "
            f"{_fmt(b['records_per_second_excl_spark_start'], 0)} | {_fmt(b['python_peak_mib'], 0)} | "
            f"{_fmt(b['jvm_peak_mib'], 0)} |")
    lines += [
        "",
        "## Whole graph on a fresh lakehouse (main job at tiny = `fitness-assets demo`; full refresh at 500k/5M)",
        "",
        "| size | readings | wall s | job s | Spark start s | start share | asset / check steps s "
        "| Python peak MiB | JVM peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, g in s["whole_graph"].items():
        lines.append(
            f"| {size} | {g['readings']:,} | {_fmt(g['wall_seconds'])} | {_fmt(g['job_seconds'])} | "
            f"{_fmt(g['spark_start_seconds'])} | {g['spark_start_share']:.0%} | "
            f"{g['asset_steps_seconds']:.0f} / {g['check_steps_seconds']:.0f} | {_fmt(g['python_peak_mib'], 0)} | "
            f"{_fmt(g['jvm_peak_mib'], 0)} |")
    for size, g in s["whole_graph"].items():
        if g.get("runs_wall_seconds"):
            lines += ["", f"{size}: the run of median wall time of {len(g['runs_wall_seconds'])}, each on a fresh "
                      f"lakehouse (walls {', '.join(_fmt(w) for w in g['runs_wall_seconds'])} s)."]
    lines += [
        "",
        f"## ~1 % micro-batch ({MICRO_BATCHES} time-split batches: a run on the batches before batch k, then "
        "batch k alone)",
        "",
        f"k = {MICRO_BATCH} at every size: every size simulates the same period here ({MICRO_DAYS} days, the "
        f"{LARGE} simulation's), so batch k is the same slice of the clock (an afternoon) with the same kinds of "
        "events at both sizes, only with more members; the batches after it are left out (the last ones cover "
        "the night and hold almost nothing). \"Table before\" is the share of all lines loaded before batch k. "
        "Spark: \"local, fresh JVM\" is each run's own local Spark (a run of `make demo`, or of a deployment "
        "without a Spark server); \"Connect, warm\" is both runs on one long-lived Spark Connect server (as "
        "`make live` and `make dev` run) that ran batch k-1 just before (its catch-up over the batches before that "
        "ran on local Spark); its JVM peak is the server's. The share is of the local full refresh.",
        "",
        "| size | Spark | readings | k | batch k share of lines (last batch's) | table before | catch-up run s | micro-batch wall s "
        "| excl. Spark start s | job s | share of full refresh | Python peak MiB | JVM peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    micro_batches = [(size, "local, fresh JVM", mb) for size, mb in s["micro_batch"].items()]
    micro_batches += [(size, "Connect, warm", mb) for size, mb in s.get("micro_batch_warm", {}).items()]
    for size, spark, mb in micro_batches:
        share = mb["share_of_full_refresh"]
        lines.append(
            f"| {size} | {spark} | {mb['readings']:,} | {mb['batch']} | {mb['batch_share_of_lines']:.2%} "
            f"({_pct(mb['last_batch_share_of_lines'], 2)}) | {_pct(mb['table_share_before'], 0)} | "
            f"{_fmt(mb['catch_up_wall_seconds'])} | "
            f"{_fmt(mb['wall_seconds'])} | {_fmt(mb['wall_seconds_excl_spark_start'])} | {_fmt(mb['job_seconds'])} | "
            f"{'n/a' if share is None else f'{share:.0%}'} | {_fmt(mb['python_peak_mib'], 0)} | "
            f"{_fmt(mb['jvm_peak_mib'], 0)} |")
    ratio = s.get("micro_batch_ratio")
    lines.append("")
    lines += render_kafka(s.get("kafka_bronze", {}))
    lines += render_live(s.get("live_latency", {}))
    if ratio:
        lines.append(f"Micro-batch cost {LARGE} / {SMALL}: {ratio['wall']:.2f} (wall), "
                     f"{ratio['wall_excl_spark_start']:.2f} (excluding Spark start-up); the goal is about 1.")
    else:
        lines.append(f"Micro-batch cost {LARGE} / {SMALL}: n/a (needs both sizes; `--quick` runs {SMALL} only).")
    for size, spark, mb in micro_batches:
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in mb["slowest_steps"].items())
        lines.append(f"\nMicro-batch at {size} ({spark}): {mb['steps']} steps, {mb['asset_steps_seconds']:.0f} s in asset steps "
                     f"and {mb['check_steps_seconds']:.0f} s in asset-check steps; first step run: "
                     f"{mb['first_step']}; slowest: {steps}.")
    done = [r for r in report["scenarios"] if "error" not in r]
    durations = ", ".join(f"{r['name']}@{r['size']} {r['scenario_seconds'] / 60:.1f}" for r in report["scenarios"])
    notes = [f"- Minutes per scenario, simulation included: {durations}."]
    notes += [f"- {r['name']}@{r['size']} took more than {SLOW_SCENARIO_SECONDS // 60} min."
              for r in report["scenarios"] if r["scenario_seconds"] > SLOW_SCENARIO_SECONDS]
    loads = [(f"{r['name']}@{r['size']}" + (" (catch-up)" if key == "catch_up_run" else ""),
              r[key].get("foreign_cpu_share")) for r in done for key in ("catch_up_run", "run") if key in r]
    notes.append("- CPU used by other processes during each run (share of the machine): "
                 + ", ".join(f"{label} {_pct(share, 0)}" for label, share in loads) + " (n/a: not measured by older runs).")
    notes += [f"- WARNING: other processes used {share:.0%} of the CPU during {label}; its times are inflated."
              for label, share in loads if share is not None and share > FOREIGN_CPU_WARNING]
    notes += [f"- {r['name']}@{r['size']} FAILED: {r['error'].splitlines()[0]}" for r in report["scenarios"]
              if "error" in r]
    lines += ["", "## Notes", "", *notes]
    if comparison:
        lines += ["", *comparison]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_kafka(kafka: dict[str, Result]) -> list[str]:
    """The "Kafka -> bronze" section: both rates, the ratio against the goal, the stages."""
    lines = [
        "## Kafka -> bronze (against a plain consume-and-decode loop)",
        "",
        f"The simulated multiplex is produced (lz4) to the in-process mock broker, {KAFKA_PARTITIONS} partitions "
        "x 3 topics, with nothing dropped (low watermarks 0). Baseline: a confluent-kafka `Consumer` with the "
        "reader's client settings, assigned to every partition from the beginning, `consume(10000)` to the high "
        f"watermarks and `json.loads` of every payload (best of {KAFKA_BASELINE_RUNS}). Platform: `ingest_kafka` "
        "into a fresh bronze table, validating in Python/Arrow, calendar read by delta-rs (no Spark job); "
        "every record ends in bronze or "
        f"quarantine. Goal: platform / baseline >= {KAFKA_GOAL_RATIO}.",
        "",
        "| size | records | baseline s | baseline records/s | platform s | platform records/s | ratio | goal "
        "| batches | rows written | quarantined | Python / JVM CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for size, k in kafka.items():
        lines.append(
            f"| {size} | {k['records']:,} | {_fmt(k['baseline_seconds'], 2)} | "
            f"{_fmt(k['baseline_records_per_second'], 0)} | {_fmt(k['platform_seconds'])} | "
            f"{_fmt(k['platform_records_per_second'], 0)} | {k['ratio']:.3f} | "
            f"{'met' if k['meets_goal'] else 'NOT met'} | {k['batches']} | {k['rows_written']:,} | "
            f"{k['rows_quarantined']:,} | {_fmt(k['python_cpu_seconds'])} / {_fmt(k['jvm_cpu_seconds'])} |")
    if not kafka:
        lines.append("| n/a | | | | | | | | | | | |")
    for size, k in kafka.items():
        total = k["platform_seconds"]
        stages = ", ".join(f"{name} {seconds:.1f} s ({seconds / total:.0%})"
                           for name, seconds in k["stage_seconds"].items())
        top = k["dominant_stage"]
        lines += ["", f"Stages at {size} (all {k['batches']} batches): {stages}."]
        if top is not None:
            lines.append(f"What dominates: {top}, {KAFKA_STAGES.get(top, top)}, "
                         f"{k['stage_seconds'][top] / total:.0%} of the ingestion.")
    lines.append("")
    return lines


def render_live(live: dict[str, Result]) -> list[str]:
    """The "Live latency" section: record produced to Kafka -> its effect in gold."""
    lines = [
        "## Live latency (record produced -> its effect in gold, no run launched by hand)",
        "",
        "A real Dagster daemon on a temporary home with the sensors and the automation sensor running "
        "(micro-batch interval below), the local broker and a tiny simulated chain; after the first fill of gold, "
        "profile changes (CDC) are produced one at a time and the time until bronze, then "
        "`gold/workout_bpm_summary`, shows each is measured. Every Dagster run is a new process; with Spark "
        "`connect` the runs share a warm Spark Connect server (as `make live` does), with `local` each starts a JVM.",
        "",
        "| chain | Spark | micro-batch s | first fill s | rounds | to bronze p50 / p95 s | to gold p50 / p95 s |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for size, r in live.items():
        lines.append(f"| {size} | {r.get('spark', 'local')} | {r['microbatch_seconds']} | "
                     f"{_fmt(r['first_fill_seconds'], 0)} | {r['rounds']} | "
                     f"{_fmt(r['to_bronze_p50'], 0)} / {_fmt(r['to_bronze_p95'], 0)} | "
                     f"{_fmt(r['to_gold_p50'], 0)} / {_fmt(r['to_gold_p95'], 0)} |")
    if not live:
        lines.append("| n/a | | | | | | |")
    lines.append("")
    return lines


def write_results(report: Result, results_dir: Path, comparison: list[str] | None = None) -> str:
    """Write results.json and RESULTS.md (with the ``comparison`` section); return the markdown."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render(report, comparison)
    (results_dir / "RESULTS.md").write_text(markdown, encoding="utf-8")
    return markdown


def previous_scenarios(results_dir: Path, only: list[str] | None) -> list[Result]:
    """With ``--only``, the other families' results of the last run are kept (each scenario
    carries its own date), so a partial run updates the files instead of emptying them."""
    previous = results_dir / "results.json"
    if not only or not previous.exists():
        return []
    return [r for r in json.loads(previous.read_text(encoding="utf-8")).get("scenarios", []) if r["name"] not in only]
