"""A local Kafka-protocol broker for laptops and tests: librdkafka's mock cluster on a fixed port.

No Kafka, Redpanda or Docker is needed: the confluent-kafka wheel ships librdkafka, whose mock
cluster speaks the real Kafka protocol (produce, fetch, consumer groups, committed offsets,
transactions). Its only listener binds 127.0.0.1 on a random port, and librdkafka has no way
to choose it, so a fixed address is made of two parts:

- a TCP relay listening on ``127.0.0.1:<port>`` that pipes every connection to the mock
  broker's real listener, byte for byte;
- the mock broker advertising ``127.0.0.1:<port>`` in its metadata
  (``rd_kafka_mock_broker_set_host_port``), so clients that bootstrap through the relay keep
  talking through it and never learn the random port.

The mock cluster is reached through ctypes (its C API is documented as experimental in
librdkafka's ``rdkafka_mock.h``). It lives in this process, keeps data in memory only, and
silently drops a partition's oldest data beyond ~5 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from fitness_assets.tables import KAFKA_TOPICS

DEFAULT_PORT = 9092
DEFAULT_PARTITIONS = 4
HOST = "127.0.0.1"
_BROKER_ID = 1
_RELAY_CHUNK = 1 << 16


def _load_librdkafka() -> ctypes.CDLL:
    """The librdkafka shared object the confluent-kafka wheel loaded, so that ctypes and the
    Python clients share one library (and its version)."""
    import confluent_kafka

    package = Path(confluent_kafka.__file__).resolve().parent
    patterns = [
        str(package.parent / "confluent_kafka.libs" / "librdkafka*.so*"),
        str(package / ".dylibs" / "librdkafka*.dylib"),
        str(package.parent / "confluent_kafka.libs" / "librdkafka*.dll"),
    ]
    candidates = [path for pattern in patterns for path in sorted(glob.glob(pattern))]
    if not candidates:
        found = ctypes.util.find_library("rdkafka")
        if found is None:
            raise RuntimeError("librdkafka not found next to confluent_kafka nor on the library path")
        candidates = [found]
    lib = ctypes.CDLL(candidates[0])
    vp, cp, ip = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_new.argtypes = []
    lib.rd_kafka_conf_set.restype = ip
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ip, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_destroy.restype = None
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_err2str.restype = cp
    lib.rd_kafka_err2str.argtypes = [ip]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, ip]
    lib.rd_kafka_mock_cluster_destroy.restype = None
    lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_create.restype = ip
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ip, ip]
    lib.rd_kafka_mock_broker_set_host_port.restype = None
    lib.rd_kafka_mock_broker_set_host_port.argtypes = [vp, ctypes.c_int32, cp, ip]
    return lib


class _Relay:
    """Accepts connections on a loopback port and pipes each one to ``target``.

    Two threads per connection (one per direction) keep it simple; a broker has a handful of
    connections per client, and blocking socket calls release the GIL.
    """

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server((HOST, port), backlog=64)
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"kafka-relay-{self.port}", daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_RELAY_CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stopping.set()
        self._server.close()
        self._acceptor.join()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
        with self._lock:
            for s in self._sockets:
                s.close()
            self._sockets.clear()


class MockKafkaBroker:
    """A one-broker Kafka-protocol cluster serving on ``127.0.0.1:<port>`` with ``topics``
    created, ``partitions`` each, for as long as the context is open.

    ``port=0`` takes a free port (read it from :attr:`bootstrap_servers`), so parallel tests
    and processes do not collide. Topics not listed are still auto-created on first use with
    the mock's default of 4 partitions.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        partitions: int = DEFAULT_PARTITIONS,
        topics: Iterable[str] = KAFKA_TOPICS,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        if not 0 <= port <= 65535:
            raise ValueError("port must be in 0..65535")
        self.requested_port = port
        self.partitions = partitions
        self.topics = tuple(topics)
        self._lib: ctypes.CDLL | None = None
        self._rk: int | None = None
        self._cluster: int | None = None
        self._relay: _Relay | None = None

    @property
    def port(self) -> int:
        if self._relay is None:
            raise RuntimeError("broker not started")
        return self._relay.port

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> MockKafkaBroker:
        """Create the cluster and its topics, then open the port (an occupied port raises
        ``OSError`` before anything is left running)."""
        if self._relay is not None:
            raise RuntimeError("broker already started")
        lib = _load_librdkafka()
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        for name, value in (("log_level", "3"), ("client.id", "fitness-mock-cluster")):
            if lib.rd_kafka_conf_set(conf, name.encode(), value.encode(), errstr, len(errstr)) != 0:
                raise RuntimeError(f"librdkafka conf {name}: {errstr.value.decode()}")
        rk = lib.rd_kafka_new(0, conf, errstr, len(errstr))
        if not rk:
            raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
        cluster = lib.rd_kafka_mock_cluster_new(rk, 1)
        if not cluster:
            lib.rd_kafka_destroy(rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self._lib, self._rk, self._cluster = lib, rk, cluster
        try:
            for topic in self.topics:
                err = lib.rd_kafka_mock_topic_create(cluster, topic.encode(), self.partitions, 1)
                if err:
                    raise RuntimeError(f"creating topic {topic}: {lib.rd_kafka_err2str(err).decode()}")
            real_host, real_port = lib.rd_kafka_mock_cluster_bootstraps(cluster).decode().split(",")[0].rsplit(":", 1)
            self._relay = _Relay(self.requested_port, (real_host, int(real_port)))
            lib.rd_kafka_mock_broker_set_host_port(cluster, _BROKER_ID, HOST.encode(), self._relay.port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the port and destroy the cluster (its data is gone)."""
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._lib is not None:
            if self._cluster:
                self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            if self._rk:
                self._lib.rd_kafka_destroy(self._rk)
        self._lib = self._rk = self._cluster = None

    def __enter__(self) -> MockKafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(port: int = DEFAULT_PORT, partitions: int = DEFAULT_PARTITIONS, topics: Iterable[str] = KAFKA_TOPICS) -> int:
    """Run a broker until SIGINT or SIGTERM; print its address once (flushed, so a parent
    process can read it); return 0 after a clean stop."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with MockKafkaBroker(port=port, partitions=partitions, topics=topics) as broker:
            names = ",".join(broker.topics)
            print(f"Kafka broker (librdkafka mock) on {broker.bootstrap_servers}: topics {names}, "
                  f"{broker.partitions} partitions each; pid {os.getpid()}; Ctrl-C or SIGTERM stops it",
                  flush=True)
            while not stop.wait(0.5):
                pass
        print("Kafka broker stopped", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
