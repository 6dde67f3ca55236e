"""The live platform on one machine: a Kafka-protocol broker, a producer playing a fitness-centre
chain in accelerated real time, and Dagster (UI and daemon) keeping the tables fresh.

``fitness-assets live`` (``make live``) runs it until Ctrl-C; the end-to-end test starts the
same daemon the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from fitness_assets.instance import dagster_home, ensure_instance
from fitness_assets.settings import PROJECT_ROOT

WORKSPACE = PROJECT_ROOT / "workspace.yaml"
# Short windows so that a stopped producer shows within minutes: warning at half the window.
LIVE_FRESHNESS_MINUTES = {"sources": 2, "bronze": 4, "quarantine": 4, "silver": 6, "gold": 8}


def live_environment(base: Mapping[str, str], bootstrap_servers: str, microbatch_seconds: int) -> dict[str, str]:
    """The environment of the live code location; values already set in ``base`` win."""
    env = dict(base)
    env["FITNESS_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    env.setdefault("FITNESS_MICROBATCH_SECONDS", str(microbatch_seconds))
    env.setdefault("FITNESS_AUTOMATION", "on")
    for layer, minutes in LIVE_FRESHNESS_MINUTES.items():
        env.setdefault(f"FITNESS_FRESHNESS_{layer.upper()}_MINUTES", str(minutes))
    return env


def start_dagster(env: Mapping[str, str], ui_port: int | None = 3000) -> subprocess.Popen:
    """``dagster dev`` (UI on loopback and daemon) or, with ``ui_port=None``, the daemon alone."""
    from dagster import DagsterInstance

    home = Path(env["DAGSTER_HOME"])
    ensure_instance(home)
    # Create the storage once, here: the daemon and its code server would otherwise race to
    # create the same SQLite schemas on a fresh home (alembic: "more than one head").
    with DagsterInstance.from_config(str(home)):
        pass
    bin_dir = Path(sys.executable).parent
    if ui_port is None:
        command = [str(bin_dir / "dagster-daemon"), "run", "-w", str(WORKSPACE)]
    else:
        command = [str(bin_dir / "dagster"), "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(ui_port)]
    return subprocess.Popen(command, env=dict(env), cwd=PROJECT_ROOT, start_new_session=True)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process group started by :func:`start_dagster` (its runs included)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def warm_spark(env: dict[str, str], port: int, log_path: Path | None = None):
    """Start a Spark Connect server and point ``env``'s runs at it, unless ``env`` already
    chooses a Spark (FITNESS_SPARK_MODE); returns the server to stop, or None."""
    from fitness_assets.lakehouse.connect_server import SparkConnectServer

    if env.get("FITNESS_SPARK_MODE"):
        return None
    server = SparkConnectServer(port=port, log_path=log_path).start()
    env.update(FITNESS_SPARK_MODE="connect", FITNESS_SPARK_CONNECT_URL=server.url)
    return server


def earlier_broker_positions(lakehouse_root: str) -> dict[str, int]:
    """The Kafka positions bronze holds under ``lakehouse_root`` (from the Delta log only)."""
    from fitness_assets.lakehouse.store import DeltaRsTableStore
    from fitness_assets.pipelines.bronze_kafka import stored_positions
    from fitness_assets.tables import KAFKA_MULTIPLEX_BZ

    def no_spark():
        raise RuntimeError("reading Kafka positions needs no Spark")

    return stored_positions(DeltaRsTableStore(lakehouse_root, no_spark), KAFKA_MULTIPLEX_BZ)[0]


LOCAL_BROKER_AFTER_EARLIER_ONE = (
    "the lakehouse holds Kafka positions read from an earlier broker, and `live` starts a new, empty local broker "
    "(its offsets start at 0 again): run `make reset` first, or set FITNESS_KAFKA_BOOTSTRAP_SERVERS to the broker "
    "those positions came from")


def run_live(landing_root: str, *, port: int = 9092, ui_port: int = 3000, interval: float = 5.0,
             batches: int = 48, microbatch_seconds: int = 30, spark_port: int = 15002) -> int:
    """Broker (unless FITNESS_KAFKA_BOOTSTRAP_SERVERS names a real cluster), a warm Spark
    (unless FITNESS_SPARK_MODE chooses one), producer and Dagster, until Ctrl-C. After the
    producer's last batch the platform keeps running, so its freshness turns to warning and
    then failure in the UI."""
    from fitness_assets.streaming.broker import MockKafkaBroker
    from fitness_assets.streaming.live import live_config, play

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    external = os.environ.get("FITNESS_KAFKA_BOOTSTRAP_SERVERS")
    broker = spark = dagster = producer = None
    try:  # whatever fails to start, what did start is stopped (a Spark JVM left would hold its port)
        broker = None if external else MockKafkaBroker(port=port).start()
        servers = external or broker.bootstrap_servers
        env = live_environment(os.environ, servers, microbatch_seconds)
        env["DAGSTER_HOME"] = str(dagster_home())  # unset or blank: .data/dagster_home; made absolute
        print("starting a warm Spark (Spark Connect) ...", flush=True)
        spark = warm_spark(env, spark_port, Path(env["DAGSTER_HOME"]) / "spark-connect.log")
        dagster = start_dagster(env, ui_port)
        print(f"Spark at {env.get('FITNESS_SPARK_CONNECT_URL') or env.get('FITNESS_SPARK_MODE')}; Kafka at {servers}; "
              f"Dagster UI on http://127.0.0.1:{ui_port} (sensors and automation running); Ctrl-C stops everything",
              flush=True)
        producer = threading.Thread(target=play, args=(servers, landing_root, live_config(batches=batches)),
                                    kwargs={"interval": interval, "stop": stop}, daemon=True)
        producer.start()
        while not stop.wait(1):
            if dagster.poll() is not None:
                print("Dagster stopped", file=sys.stderr)
                return 1
        return 0
    finally:
        stop.set()
        if producer is not None:
            producer.join(timeout=30)
        if dagster is not None:
            stop_process(dagster)
        if spark is not None:
            spark.stop()
        if broker is not None:
            broker.stop()


def table_rows(lakehouse_root: Path, layer: str, name: str) -> list[dict]:
    """Rows of a Delta table as Python dicts (empty while the table does not exist yet)."""
    from deltalake import DeltaTable

    path = Path(lakehouse_root) / layer / name
    if not (path / "_delta_log").is_dir():
        return []
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def profile_move(profile: Mapping[str, object], city: str, later_seconds: float = 86_400) -> dict:
    """A `user_info` update (CDC) that moves a member, taken from their current silver profile,
    dated ``later_seconds`` after it so it wins."""
    dob = profile["dob"]
    return {
        "user_id": profile["user_id"], "update_type": "update",
        "timestamp": profile["updated"].timestamp() + later_seconds,
        "dob": dob.strftime("%m/%d/%Y") if dob else None,
        "sex": profile["sex"], "gender": profile["gender"], "first_name": profile["first_name"],
        "last_name": profile["last_name"],
        "address": {"street_address": profile["street_address"], "city": city, "state": profile["state"],
                    "zip": profile["zip"]},
    }
