"""Other processes on the machine: CPU sampling, waiting for a quiet machine before a run, the
share of the CPU others used during a scenario's runs, and the machine's facts."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time

from benchmarks.config import DRIVER_MEMORY, QUIET_SHARE, ROOT, Result
from fitness_assets.lakehouse import class_archive
from fitness_assets.lakehouse.spark import DEFAULT_MASTER, DRIVER_GC
from fitness_assets.settings import SparkEnv


def cpu_seconds() -> tuple[float, float]:
    """Busy CPU seconds of the whole machine since boot, and CPU seconds of this process's
    reaped descendants (a finished task with its JVM)."""
    with open("/proc/stat", encoding="ascii") as handle:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, handle.readline().split()[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, children.ru_utime + children.ru_stime


def wait_for_quiet(max_wait: float, window: float = 5.0) -> float:
    """Wait until the machine's CPU is below ``QUIET_SHARE`` busy over ``window`` seconds, or
    ``max_wait`` has passed; return the seconds waited.

    Nothing of the benchmark runs meanwhile, so any load is another process's, and on two
    cores a concurrent test suite would slow a run down by half.
    """
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    while True:
        before, _ = cpu_seconds()
        time.sleep(window)
        after, _ = cpu_seconds()
        waited = time.perf_counter() - started
        if (after - before) / (window * cores) < QUIET_SHARE or waited >= max_wait:
            return waited


def contention(result: Result) -> float:
    """The largest share of CPU other processes used during one of the scenario's runs."""
    return max((result[key]["foreign_cpu_share"] for key in ("catch_up_run", "run") if key in result), default=0.0)


def machine_facts() -> Result:
    """Cores and memory as ``nproc`` and ``free`` report them, and the software versions."""
    import pyspark

    def command(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    free = command("free", "-b").splitlines()
    mem = next((line.split() for line in free if line.startswith("Mem:")), [])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    return {
        "commit": command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD") or None,
        "uncommitted_changes": bool(command("git", "-C", str(ROOT), "status", "--porcelain",
                                            "--untracked-files=no")),
        "nproc": int(command("nproc") or os.cpu_count() or 0),
        "memory_total_gib": int(mem[1]) / 2**30 if mem else None,
        "memory_available_gib": int(mem[6]) / 2**30 if len(mem) > 6 else None,
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "java": java.splitlines()[0] if java else None,
        "spark_master": DEFAULT_MASTER,
        "driver_memory": DRIVER_MEMORY,
        "class_archive": bool(class_archive.java_options()),
        "compile_from_rows": SparkEnv.from_env().compile_from_rows,
        "jit": SparkEnv.from_env().jit,
        "gc": DRIVER_GC,
    }
