"""Spark sessions: local (embedded default), Spark Connect, or Databricks.

One session per process: every caller that asks for the same configuration gets the session
already running, so a run that materializes many assets starts one JVM, not one per asset.
Asking for a second, different session (another mode, master, server or driver memory) in the
same process is an error: a JVM keeps its static settings for life, so it could not be honoured.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
from pyspark.errors import PySparkRuntimeError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from fitness_assets.lakehouse import class_archive

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
_LOCK = threading.Lock()
_SESSION: SparkSession | None = None
_SESSION_KEY: tuple | None = None

# The one place the defaults live (the resource, the environment reader and tests use these).
DEFAULT_MODE = "local"
DEFAULT_MASTER = "local[2]"
# 3g: the full refresh at 5M readings runs in it as fast as with 6g (157.6 vs 162.0 s) with a
# JVM peak of 3.5 GiB instead of 5.5, and a small run starts faster (benchmarks, 2026-12-05).
DEFAULT_DRIVER_MEMORY = "3g"
DEFAULT_SHUFFLE_PARTITIONS = 4
MODES = ("local", "connect", "databricks")
# The garbage collector of the local driver and of the Spark Connect server this project
# starts. Against Java's default (G1) on this project's runs (2 cores, 3g heap, 2026-12-05):
# the 5M full refresh 181.3 -> 168.1 s with a JVM peak of 3.8 -> 3.0 GiB, the 5M micro-batch
# 53.3 -> 48.8 s (on a warm Connect server 37.6 -> 33.8 s, its peak 3.6 -> 3.1 GiB). G1's
# concurrent threads compete with the queries for two cores; the parallel collector pauses
# instead. A collector named in the caller's own spark.driver.extraJavaOptions replaces it
# on the local driver (the JVM refuses two).
DRIVER_GC = "-XX:+UseParallelGC"
# The local driver's just-in-time compilers. "tiered" is Java's default: the quick compiler
# (C1), then the optimizing one (C2) for hot code, which pays over millions of rows (the 5M
# full refresh: 168 s tiered, 222 s quick). "quick" stops at C1: in a run over little data,
# C2's compilations of Spark's own code cost more CPU than they save (the demo's graph:
# ~4 s less of ~34). "auto" is quick when the data the run works on (the local folders of
# ``data_roots``) is smaller than QUICK_JIT_BELOW_BYTES, tiered otherwise or when it cannot
# tell: the demo's data is 0.2 MB, the 0.5M-reading benchmark's 82 MB, where tiered was 8 s
# faster.
JIT_MODES = ("auto", "quick", "tiered")
DEFAULT_JIT = "auto"
QUICK_JIT_BELOW_BYTES = 16 * 2**20
QUICK_JIT = "-XX:TieredStopAtLevel=1"
# Rows per Arrow record batch between Python and Spark, and per partition of an Arrow table
# handed to Spark (PySpark makes one partition of each batch; its default is 10,000). A table
# of at most COMBINE_ROWS rows is first made one chunk, so its partitions follow its size, not
# the files it was read from: the 5M micro-batch's ~100k changed readings (13 chunks) were 13
# partitions and a task each in every query over them, now 2. Same states, alternating (jobs
# of batches 88 + 89 after a warm-up run, local): 29.8-30.6 s with 10,000-row batches as they
# came, 27.7-29.5 s so, five runs each; the 5M full refresh 42.7 / 43.2 s and 43.4 / 43.3 s.
ARROW_BATCH_ROWS = 100_000
COMBINE_ROWS = 1_000_000
# The smallest heap Spark's driver starts with: below it, SparkContext refuses ("System memory
# ... must be at least 471859200"), measured on 4.1.1.
MIN_DRIVER_MEMORY_BYTES = 450 * 2**20
_SIZE = re.compile(r"([1-9][0-9]*)([kmgt]?)", re.IGNORECASE)
_MASTER = re.compile(r"local(\[(\*|[1-9][0-9]*)(,[0-9]+)?\])?|local-cluster\[[0-9, ]+\]|yarn|(spark|k8s)://\S+")
_CONNECT_URL = re.compile(r"sc://[^\s/:;]+(:[0-9]{1,5})?/?(;\S*)?")


def driver_memory_problem(text: str) -> str | None:
    """Why ``text`` cannot be the local driver's memory (None when it can): Java's heap size
    syntax (a whole number, k/m/g/t) and at least what Spark's driver starts with."""
    match = _SIZE.fullmatch(text)
    if match is None:
        return "a size Java reads, such as 3g or 3072m (a whole number with k, m, g or t)"
    number, unit = match.groups()
    if int(number) * 1024 ** "_kmgt".index(unit.lower() or "_") < MIN_DRIVER_MEMORY_BYTES:
        return "at least 450m (Spark's driver does not start with less)"
    return None


def master_problem(text: str) -> str | None:
    """Why ``text`` cannot be a Spark master URL (None when it can)."""
    if _MASTER.fullmatch(text) is None:
        return "a Spark master such as local[2], local[*] or spark://host:7077"
    return None


def connect_url_problem(text: str) -> str | None:
    """Why ``text`` cannot be a Spark Connect URL (None when it can)."""
    match = _CONNECT_URL.fullmatch(text)
    if match is None or (match.group(1) and not 0 < int(match.group(1)[1:]) < 65536):
        return "a Spark Connect URL such as sc://127.0.0.1:15002"
    return None


# Settings fixed when a Spark starts: the local driver gets them in its builder, the Spark
# Connect server this project starts on its command line. A Connect client does not send them
# (the server refuses a static setting, with a warning each session).
STATIC_CONF = {
    # PySpark's DataFrame debugging records the Python call site of every column function (a
    # stack walk and, on local Spark, four JVM calls each): ~3,000 calls, 1.3 s of a 5M
    # micro-batch (A/B, local). An ANSI cast overflow's error reads the same either way
    # (checked on 4.1.1); "true" in the resource's spark_config turns it back on locally.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}
# Settings a running session can change; everything else is fixed when the session starts.
RUNTIME_CONF = ("spark.sql.shuffle.partitions",)


@dataclass(frozen=True)
class SparkSettings:
    """How to reach Spark. ``mode`` picks the implementation; everything else tunes it."""

    mode: str = DEFAULT_MODE  # "local" | "connect" | "databricks"
    master: str = DEFAULT_MASTER
    connect_url: str | None = None
    driver_memory: str = DEFAULT_DRIVER_MEMORY
    shuffle_partitions: int = DEFAULT_SHUFFLE_PARTITIONS
    extra_conf: dict[str, str] = field(default_factory=dict)
    jit: str = DEFAULT_JIT  # local mode, when the JVM starts: see JIT_MODES
    data_roots: tuple[str, ...] = ()  # what "auto" measures

    def key(self) -> tuple:
        """What a running session cannot change and must match. The JIT is left out: it is
        chosen when the JVM starts and changes only speed, so any running JVM will do."""
        static = {k: v for k, v in self.extra_conf.items() if k not in RUNTIME_CONF}
        if self.mode == "local":
            return (self.mode, self.master, self.driver_memory, tuple(sorted(static.items())))
        return (self.mode, self.connect_url, tuple(sorted(static.items())))

    def describe(self) -> str:
        return {"local": f"local Spark {self.master} with {self.driver_memory} driver memory ({self.jit} JIT)",
                "connect": f"Spark Connect at {self.connect_url}"}.get(self.mode, self.mode)


def _base_conf(settings: SparkSettings) -> dict[str, str]:
    if settings.mode == "databricks":
        # The cluster keeps its own shuffle partitions and Arrow settings (serverless compute
        # refuses to set most); the time zone is the contract's, and the caller's settings stand.
        return {"spark.sql.session.timeZone": "UTC"} | dict(settings.extra_conf)
    conf = {
        # Every timestamp of the contract is UTC; Spark must not shift them to the host's zone.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
    }
    if settings.mode == "local":
        conf.update(STATIC_CONF)
    conf.update(settings.extra_conf)
    return conf


def data_bytes(roots: tuple[str, ...], limit: int) -> int | None:
    """The bytes of the files under the folders ``roots``, counted until they reach ``limit``;
    None when a root is not a local path (an object store is not measured). A missing folder
    holds nothing."""
    total = 0
    pending = []
    for root in roots:
        if "://" in root and not root.startswith("file://"):
            return None
        pending.append(root.removeprefix("file://"))
    while pending and total < limit:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def jit_of(settings: SparkSettings) -> str:
    """The compilers a local driver starting now gets: "quick" or "tiered" (see JIT_MODES)."""
    if settings.jit not in JIT_MODES:
        raise ValueError(f"unknown JIT {settings.jit!r}: set FITNESS_SPARK_JIT to one of {', '.join(JIT_MODES)}")
    if settings.jit != "auto":
        return settings.jit
    size = data_bytes(settings.data_roots, QUICK_JIT_BELOW_BYTES) if settings.data_roots else None
    return "quick" if size is not None and size < QUICK_JIT_BELOW_BYTES else "tiered"


def _driver_java_options(settings: SparkSettings, archive: bool) -> str:
    """Logging at error level from the start (setLogLevel comes too late for the start-up
    warnings), the class archive when there is one, the collector and the compilers, then the
    caller's own options."""
    options = [f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}"]
    if archive:
        options += class_archive.java_options()
    own = settings.extra_conf.get("spark.driver.extraJavaOptions")
    if not (own and re.search(r"-XX:\+Use\w*GC\b", own)):
        options.append(DRIVER_GC)
    if jit_of(settings) == "quick":
        options.append(QUICK_JIT)
    return " ".join(options + ([own] if own else []))


class SparkUnavailable(RuntimeError):
    """No Spark Connect server answers at the configured address."""


CONNECT_DEFAULT_PORT = 15002
CONNECT_WAIT_SECONDS = 10.0


def wait_for_server(url: str, seconds: float | None = None, stopped: bool = False) -> None:
    """Return once something accepts connections at the Spark Connect ``url``'s host and port;
    raise ``SparkUnavailable`` after ``seconds`` (a server that is starting gets that long).
    PySpark's client would otherwise retry an absent server for about ten minutes. ``stopped``:
    the session was made, and its server has stopped answering since."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "sc" or not parsed.hostname:
        raise ValueError(f"a Spark Connect URL looks like sc://127.0.0.1:15002, not {url!r}")
    address = (parsed.hostname, parsed.port or CONNECT_DEFAULT_PORT)
    deadline = time.monotonic() + (CONNECT_WAIT_SECONDS if seconds is None else seconds)
    while True:
        try:
            with socket.create_connection(address, timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                if stopped:
                    raise SparkUnavailable(
                        f"the Spark Connect server at {url} stopped answering during this run "
                        f"({error.strerror or error}): start it again, then run again (what was committed "
                        "stays, nothing is taken in twice)") from None
                raise SparkUnavailable(
                    f"no Spark Connect server answers at {url} ({error.strerror or error}): start one "
                    "(fitness-assets spark-connect) or point FITNESS_SPARK_CONNECT_URL at one, or set "
                    "FITNESS_SPARK_MODE=local") from None
            time.sleep(0.25)


def _build(settings: SparkSettings, archive: bool = True) -> SparkSession:
    if settings.mode not in MODES:
        raise ValueError(f"unknown Spark mode {settings.mode!r}: set FITNESS_SPARK_MODE to local, connect or databricks")
    for name, value, problem in (("master", settings.master, master_problem),
                                 ("driver_memory", settings.driver_memory, driver_memory_problem),
                                 ("connect_url", settings.connect_url, connect_url_problem)):
        wrong = value is not None and (settings.mode == "connect") == (name == "connect_url") and problem(value)
        if wrong:
            raise ValueError(f"the Spark resource's {name} must be {wrong}, not {value!r}")
    if settings.mode == "local":
        builder = (
            SparkSession.builder.master(settings.master)
            .appName("fitness-assets")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.memory", settings.driver_memory)
            .config("spark.ui.showConsoleProgress", "false")
            # Loopback only.
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            # Arrow tables handed to Spark (a change feed, a small read, a merge's source)
            # become an RDD of Arrow batches decoded in tasks, never a LocalRelation that holds
            # every row inside the plan: such a plan is optimized, copied and run with all its
            # rows on the driver. Measured on the 5M micro-batch (2 cores, same state): its
            # three steps over ~30k changed readings took 5.1-5.3 s with the default 48 MB cut,
            # 3.6-4.3 s with none; the 0.5M micro-batch and the main job did not change.
            .config("spark.sql.execution.arrow.localRelationThreshold", "0")
        )
    elif settings.mode == "connect":
        if not settings.connect_url:
            raise ValueError("Spark mode 'connect' needs a connect_url such as sc://127.0.0.1:15002")
        wait_for_server(settings.connect_url)
        builder = SparkSession.builder.remote(settings.connect_url)
    elif settings.mode == "databricks" and os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return _with_conf(SparkSession.builder.getOrCreate(), settings)  # on a Databricks cluster: its own session
    elif settings.mode == "databricks":
        try:
            from databricks.connect import DatabricksSession  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - depends on a separate environment
            raise RuntimeError(
                "Spark mode 'databricks' needs databricks-connect, which must live in its own "
                "virtual environment (it replaces pyspark); see README, 'Running on Databricks'."
            ) from exc
        return _with_conf(DatabricksSession.builder.getOrCreate(), settings)
    else:
        raise ValueError(f"unknown Spark mode {settings.mode!r}: use local, connect or databricks")
    for key, value in _base_conf(settings).items():
        builder = builder.config(key, value)
    if settings.mode == "connect":
        session = builder.getOrCreate()
        # PySpark's client retries a server that stopped answering for ~10 minutes per call, so
        # a run whose server died would hang that long in every remaining step: ~10 s here,
        # as long as a starting server gets (Databricks keeps its own client's policy).
        from pyspark.sql.connect.client.retries import DefaultPolicy

        session.client.set_retry_policies([DefaultPolicy(max_retries=5, backoff_multiplier=2.0, initial_backoff=250,
                                                         max_backoff=4000)])
        return session
    if settings.mode != "local":
        return builder.getOrCreate()
    builder = builder.config("spark.driver.extraJavaOptions", _driver_java_options(settings, archive))
    try:
        session = builder.getOrCreate()
    except PySparkRuntimeError as error:
        if error.getCondition() != "JAVA_GATEWAY_EXITED" or not archive or not class_archive.java_options():
            raise
        # Without the archive: a driver that fails again fails for its own reason (raised here);
        # one that starts shows the archive was damaged, and it is dropped.
        session = _build(settings, archive=False)
        class_archive.discard()
        return session
    session.sparkContext.setLogLevel("ERROR")
    return session


def _with_conf(session: SparkSession, settings: SparkSettings) -> SparkSession:
    """A session made elsewhere (a Databricks cluster's, Databricks Connect's) with this
    platform's settings that can be set at run time: the UTC time zone, the caller's own."""
    for key, value in _base_conf(settings).items():
        session.conf.set(key, value)
    return session


_ALIVE = [0.0]  # when the Spark Connect server last answered (monotonic seconds)


def get_session(settings: SparkSettings | None = None) -> SparkSession:
    """The process's Spark session, started on first use."""
    global _SESSION, _SESSION_KEY
    settings = settings or SparkSettings()
    with _LOCK:
        if _SESSION is not None:
            if settings.key() != _SESSION_KEY:
                raise RuntimeError(
                    f"this process already runs {_SESSION_DESCRIPTION}; a second, different Spark session "
                    f"({settings.describe()}) cannot start in it: give every resource the same Spark settings")
            if settings.mode == "connect" and time.monotonic() - _ALIVE[0] > 1.0:
                # A server that stopped answering fails the step now (asked at most once a second).
                wait_for_server(settings.connect_url, seconds=0.5, stopped=True)
                _ALIVE[0] = time.monotonic()
            for key, value in _base_conf(settings).items():
                if key in RUNTIME_CONF:
                    _SESSION.conf.set(key, value)
            return _SESSION
        if settings.mode == "local":
            settings = replace(settings, jit=jit_of(settings))  # measured once, when the JVM starts
        _SESSION = _build(settings)
        _SESSION_KEY = settings.key()
        _set_description(settings.describe())
        return _SESSION


_SESSION_DESCRIPTION = ""


def _set_description(text: str) -> None:
    global _SESSION_DESCRIPTION
    _SESSION_DESCRIPTION = text


def running_description() -> str:
    """What the process's session is ("" when none runs): mode, master, memory, JIT."""
    return _SESSION_DESCRIPTION if _SESSION is not None else ""


def stop_session() -> None:
    """Stop the process's session (CLI end, benchmarks)."""
    global _SESSION, _SESSION_KEY
    with _LOCK:
        if _SESSION is not None:
            _SESSION.stop()
        _SESSION = None
        _SESSION_KEY = None


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect session (a Spark Connect server, Databricks Connect): the queries run in
    another process, which may share this one's file system or not."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def arrow_frame(spark: SparkSession, table: pa.Table, schema: StructType | None = None) -> DataFrame:
    """``spark.createDataFrame(table)`` without losing rows: classic PySpark streams the table's
    record batches to the JVM, which stops at the first empty one, so every row after an empty
    chunk (a file with no lines, an empty Delta file) was silently dropped. Empty batches are
    left out here. A table of at most ``COMBINE_ROWS`` rows in several chunks is made one chunk
    first (a copy), so Spark gets ``ARROW_BATCH_ROWS``-row partitions (see there); a larger one
    keeps its chunks, uncopied."""
    batches = table.to_batches()
    kept = [batch for batch in batches if batch.num_rows]
    if len(kept) > 1 and table.num_rows <= COMBINE_ROWS:
        table = pa.Table.from_batches(kept, schema=table.schema).combine_chunks()
    elif kept and len(kept) != len(batches):
        table = pa.Table.from_batches(kept, schema=table.schema)
    return spark.createDataFrame(table, schema) if schema is not None else spark.createDataFrame(table)
