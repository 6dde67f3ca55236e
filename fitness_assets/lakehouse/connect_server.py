"""A warm Spark: the Spark Connect server that ships inside the pyspark wheel, on loopback.

Runs connect to it (``FITNESS_SPARK_MODE=connect``) instead of starting a JVM each, so a
micro-batch pays no Spark start-up. Tables stay on delta-rs; the server reads their Parquet
files by path, so it must run on the same machine (or see the same object store).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pyspark

from fitness_assets.lakehouse import class_archive
from fitness_assets.lakehouse.spark import DEFAULT_DRIVER_MEMORY, DEFAULT_MASTER, DRIVER_GC, STATIC_CONF

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
DEFAULT_PORT = 15002


def spark_home() -> Path:
    return Path(pyspark.__file__).parent


def free_port() -> int:
    """A loopback port nothing listens on now (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class SparkConnectServer:
    """Local Spark (``DEFAULT_MASTER`` unless told) behind a Connect endpoint on ``127.0.0.1:<port>`` while open."""

    def __init__(self, port: int = DEFAULT_PORT, master: str = DEFAULT_MASTER, driver_memory: str = DEFAULT_DRIVER_MEMORY,
                 log_path: Path | None = None, start_timeout: float = 180):
        self.port, self.master, self.driver_memory = port, master, driver_memory
        self.log_path, self.start_timeout = log_path, start_timeout
        self._process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server JVM's process id while it runs (spark-submit execs the JVM in place)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> SparkConnectServer:
        if port_open(self.port):
            raise OSError(f"port {self.port} is in use: stop what listens there or choose another port")
        home = spark_home()
        command = [
            str(home / "bin" / "spark-submit"), "--master", self.master, "--driver-memory", self.driver_memory,
            # The same collector as a local driver (see spark.DRIVER_GC).
            "--driver-java-options", " ".join([*class_archive.java_options(), DRIVER_GC]),
            # Loopback only: the server would otherwise listen on every interface.
            "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
            "--conf", f"spark.connect.grpc.binding.port={self.port}",
            "--conf", "spark.sql.session.timeZone=UTC", "--conf", "spark.ui.enabled=false",
            *[arg for key, value in STATIC_CONF.items() for arg in ("--conf", f"{key}={value}")],
            "--class", SERVER_CLASS, "spark-internal",
        ]
        if self.log_path:
            Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)  # a DAGSTER_HOME not made yet
        self._log = open(self.log_path, "ab") if self.log_path else None
        self._process = subprocess.Popen(command, env=os.environ | {"SPARK_HOME": str(home)},
                                         stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not port_open(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited with {self._process.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the Spark Connect server did not open port {self.port} in {self.start_timeout:.0f} s")
            time.sleep(0.5)
        return self

    def wait(self) -> int | None:
        """Block until the server exits; its exit code."""
        return self._process.wait() if self._process is not None else None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> SparkConnectServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
