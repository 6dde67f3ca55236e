"""Benchmarks of the platform: bronze throughput, the main job, full refresh, a ~1 % micro-batch,
and Kafka -> bronze against a plain consume-and-decode loop; and the live platform's latency.

``python -m benchmarks`` (``make bench``) runs every scenario at the demo size, ~0.5M
and ~5M heart-rate readings; ``--quick`` keeps to the demo size and ~0.5M. The Kafka scenario
uses ~250k (quick) and ~400k readings: the local mock broker keeps only ~5 MiB per partition.
``--only kafka`` (or any scenario families) runs a subset. Results go to
``benchmarks/results.json`` and ``benchmarks/RESULTS.md`` (rewritten, never merged), and the
table is printed, ending with the comparison against the previous committed run
(``git show HEAD:benchmarks/results.json``): a figure more than 20 % worse is a REGRESSION.

Each measured run happens in its own subprocess (``--task``), so every run starts a fresh JVM
and the process's peak memory belongs to that run alone: Python's peak is the process's
``ru_maxrss``; the JVM's is ``RUSAGE_CHILDREN`` once the JVM has been stopped and reaped.
Simulating landing data is a separate task, timed but never counted in a run.

Tooling beside its results, not part of the code location. Modules:
``config`` (sizes and thresholds), ``tasks`` (what a worker process measures), ``live`` (the
live latency task), ``contention`` (CPU sampling, waiting for a quiet machine, machine facts),
``scenarios`` (each scenario's tasks in subprocesses), ``report`` (summary, RESULTS.md),
``compare`` (against the previous committed run), ``__main__`` (the command line).
"""
