"""What the platform serves on this machine listens on loopback only: the Dagster UI as
`make dev`/`make live` start it, the Spark Connect server, the Kafka broker. Each is started
the project's way and then reached on 127.0.0.1 and, refused, on the machine's other addresses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fitness_assets.devstack import start_dagster, stop_process
from fitness_assets.lakehouse.connect_server import SparkConnectServer, free_port, port_open
from fitness_assets.lakehouse.spark import DRIVER_GC
from fitness_assets.streaming.broker import MockKafkaBroker

pytestmark = pytest.mark.slow


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (from `hostname -I`)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    return [a for a in out if "." in a and not a.startswith("127.")]


def _assert_loopback_only(port: int) -> None:
    assert port_open(port, "127.0.0.1")
    others = _other_addresses()
    if not others:
        pytest.skip("this machine has no address besides loopback to try")
    for address in others:
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((address, port)) != 0, f"port {port} answers on {address}"


def test_the_dagster_ui_listens_on_loopback_only(tmp_path):
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), FITNESS_AUTOMATION="off",
               FITNESS_LAKEHOUSE_ROOT=str(tmp_path / "lake"), FITNESS_LANDING_ROOT=str(tmp_path / "landing"))
    ui = start_dagster(env, ui_port=port)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert ui.poll() is None and time.time() < deadline, "the UI did not come up"
                time.sleep(1)
        _assert_loopback_only(port)
    finally:
        stop_process(ui)


def test_spark_connect_and_the_broker_listen_on_loopback_only(tmp_path):
    with MockKafkaBroker(port=0) as broker:
        _assert_loopback_only(broker.port)
    with SparkConnectServer(port=free_port(), driver_memory="1g", log_path=tmp_path / "connect.log") as spark:
        _assert_loopback_only(spark.port)
        # The server's JVM runs the local driver's collector.
        assert DRIVER_GC in Path(f"/proc/{spark.pid}/cmdline").read_bytes().decode().split("\0")


DIES = """
import os, signal, sys, time
from fitness_assets.lakehouse.spark import SparkSettings, SparkUnavailable, _build, wait_for_server
url, pid = sys.argv[1], int(sys.argv[2])
session = _build(SparkSettings(mode="connect", connect_url=url))
assert session.range(3).count() == 3
os.kill(pid, signal.SIGKILL)
started = time.monotonic()
try:
    session.range(1).count()
except Exception:
    print("failed after", round(time.monotonic() - started, 1))
try:
    wait_for_server(url, seconds=0.5, stopped=True)
except SparkUnavailable as error:
    print(error)
"""


def test_a_connect_server_that_dies_fails_the_next_call_in_seconds_not_after_ten_minutes(tmp_path):
    """PySpark's client retries a server that stopped answering for about ten minutes per call;
    a session of this platform gives up after ~10 s, and the check made when a step asks for
    the session says in one line that the server stopped. (In a process of its own: a Connect
    session cannot start beside the suite's local one.)"""
    with SparkConnectServer(port=free_port(), driver_memory="1g", log_path=tmp_path / "connect.log") as server:
        done = subprocess.run([sys.executable, "-c", DIES, server.url, str(server.pid)], capture_output=True,
                              text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines[0].startswith("failed after "), done.stderr[-2000:]
    assert float(lines[0].split()[-1]) < 60
    assert f"the Spark Connect server at {server.url} stopped answering during this run" in lines[1]
