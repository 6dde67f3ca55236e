"""The local Kafka broker, the multiplex producer and the live producer, against librdkafka's
mock cluster with real confluent-kafka clients (no Spark)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from fitness_assets.simulator import Simulator, SimulatorConfig
from fitness_assets.streaming.broker import MockKafkaBroker
from fitness_assets.streaming.live import play
from fitness_assets.streaming.producer import MultiplexProducer, multiplex_files, produce_files
from fitness_assets.tables import KAFKA_TOPICS

ROOT = Path(__file__).resolve().parent.parent
Offsets = dict[tuple[str, int], int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def _high_watermarks(bootstrap: str) -> Offsets:
    consumer = _consumer(bootstrap)
    try:
        metadata = consumer.list_topics(timeout=10)
        return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in KAFKA_TOPICS for p in metadata.topics[t].partitions}
    finally:
        consumer.close()


def _consume(bootstrap: str, start: Offsets) -> dict[tuple[str, int], list[Message]]:
    """Every message from ``start`` up to the current high watermark of each partition."""
    end = _high_watermarks(bootstrap)
    out: dict[tuple[str, int], list[Message]] = {tp: [] for tp in end}
    todo = {tp for tp in end if end[tp] > start.get(tp, 0)}
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(t, p, start.get((t, p), 0)) for t, p in todo])
        deadline = time.monotonic() + 20
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                if message.error():
                    raise KafkaException(message.error())
                tp = (message.topic(), message.partition())
                out[tp].append(message)
                if message.offset() + 1 >= end[tp]:
                    todo.discard(tp)
        assert not todo, f"partitions not read to their end: {todo}"
    finally:
        consumer.close()
    return out


def _payload(message: Message) -> object:
    try:
        return json.loads(message.value() or b"")
    except ValueError:
        return None


def _expected_ms(timestamp: int) -> int:
    return timestamp * 1000 if timestamp < 10**11 else timestamp


def test_topics_exist_with_configured_partitions(kafka_broker: str) -> None:
    with MockKafkaBroker(port=0, partitions=3) as broker:
        consumer = _consumer(broker.bootstrap_servers)
        topics = consumer.list_topics(timeout=10).topics
        consumer.close()
        assert {t: len(topics[t].partitions) for t in KAFKA_TOPICS} == dict.fromkeys(KAFKA_TOPICS, 3)
    consumer = _consumer(kafka_broker)
    topics = consumer.list_topics(timeout=10).topics
    consumer.close()
    assert {t: len(topics[t].partitions) for t in KAFKA_TOPICS} == dict.fromkeys(KAFKA_TOPICS, 4)


def test_fixed_port_is_the_one_served() -> None:
    port = _free_port()
    with MockKafkaBroker(port=port, partitions=2) as broker:
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"
        consumer = _consumer(broker.bootstrap_servers)
        metadata = consumer.list_topics(timeout=10)
        consumer.close()
        # Clients are told to come back to the fixed port, never to the mock's random one.
        assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", port)]
        with pytest.raises(OSError):
            MockKafkaBroker(port=port).start()
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "enable.idempotence": True})
        producer.produce("workout", key=b"k", value=b"v", partition=1, timestamp=1_700_000_000_000)
        assert producer.flush(10) == 0
        got = _consume(broker.bootstrap_servers, {})[("workout", 1)]
        assert [(m.key(), m.value(), m.timestamp()[1]) for m in got] == [(b"k", b"v", 1_700_000_000_000)]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_multiplex_round_trip_complete_and_ordered(kafka_broker: str, tmp_path: Path) -> None:
    """A clean multiplex comes back whole: per partition, the file order, keys, values and
    timestamps (seconds-based files converted to ms)."""
    config = SimulatorConfig.tiny(seed=7, batches=2, malformed_rate=0, wrong_type_rate=0, missing_field_rate=0)
    Simulator(config).write_all(tmp_path)
    files = multiplex_files(tmp_path / "kafka_multiplex")
    expected: dict[tuple[str, int], list[tuple[bytes | None, bytes, int]]] = {}
    seconds_lines = 0
    for path in files:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            seconds_lines += r["timestamp"] < 10**11
            key = r["key"].encode() if r["key"] is not None else None
            expected.setdefault((r["topic"], r["partition"] % 4), []).append(
                (key, r["value"].encode(), _expected_ms(r["timestamp"])))
    assert seconds_lines > 0 and len(expected) > 4

    start = _high_watermarks(kafka_broker)
    stats = produce_files(kafka_broker, files)
    got = _consume(kafka_broker, start)

    assert stats.skipped == {} and stats.produced_total == sum(map(len, expected.values()))
    assert stats.adjusted == {"timestamp_seconds": seconds_lines}
    for tp, messages in got.items():
        assert [(m.key(), m.value(), m.timestamp()[1]) for m in messages] == expected.get(tp, []), tp


def test_anomalous_lines_produced_when_they_can_be_messages(kafka_broker: str, tmp_path: Path) -> None:
    """Bad payloads still travel (bronze quarantines them); only lines without a usable topic
    are skipped, and counted."""
    Simulator(SimulatorConfig.tiny(seed=3, malformed_rate=0.05, wrong_type_rate=0.05)).write_all(tmp_path)
    files = multiplex_files(tmp_path / "kafka_multiplex")
    values, skipped = Counter(), Counter()
    for path in files:
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                skipped["malformed_json"] += 1
            elif not record.get("topic"):
                skipped["missing_topic"] += 1
            elif record["topic"] not in KAFKA_TOPICS:
                skipped["unknown_topic"] += 1
            else:
                values[(record["topic"], record.get("value"))] += 1
    bad_payloads = [v for (_, v) in values if isinstance(v, str) and not v.startswith("{")]
    assert skipped["malformed_json"] and skipped["unknown_topic"] and bad_payloads

    start = _high_watermarks(kafka_broker)
    stats = produce_files(kafka_broker, files)
    got = [m for messages in _consume(kafka_broker, start).values() for m in messages]

    assert stats.skipped == dict(skipped)
    consumed = Counter((m.topic(), m.value().decode() if m.value() is not None else None) for m in got)
    assert consumed == values
    assert set(bad_payloads) <= {v for (_, v) in consumed}


def test_delivery_errors_raise() -> None:
    """A broker that is gone makes flush fail loudly instead of losing records."""
    port = _free_port()
    with MockKafkaBroker(port=port) as broker:
        producer = MultiplexProducer(broker.bootstrap_servers, config={"message.timeout.ms": 1500})
        producer.produce_line('{"key":"1","value":"{}","topic":"bpm","partition":0,"offset":0,"timestamp":1}')
        producer.flush(10)
        producer.partition_count("workout")
    line = '{"key":"1","value":"{}","topic":"workout","partition":0,"offset":0,"timestamp":1700000000000}'
    producer.produce_line(line)
    with pytest.raises(KafkaException):
        producer.flush(10)


def _read_line(stream, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    ready = selector.select(timeout)
    selector.close()
    assert ready, "no output in time"
    return stream.readline()


def test_cli_broker_serves_its_port_and_stops_on_sigterm() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fitness_assets.cli", "broker", "--port", str(port), "--partitions", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        line = _read_line(process.stdout, 20)
        assert f"127.0.0.1:{port}" in line
        bootstrap = f"127.0.0.1:{port}"
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        producer.produce("user_info", key=b"100001", value=b'{"user_id":100001}', partition=1)
        assert producer.flush(10) == 0
        got = _consume(bootstrap, {})
        assert {tp: len(m) for tp, m in got.items()} == {
            (t, p): int((t, p) == ("user_info", 1)) for t in KAFKA_TOPICS for p in range(2)}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_live_producer_delivers_files_atomically_and_records(kafka_broker: str, tmp_path: Path) -> None:
    config = SimulatorConfig.tiny(seed=11, batches=3)
    landing = tmp_path / "landing"
    reference = tmp_path / "reference"
    Simulator(config).write_all(reference)
    seen: dict[Path, bytes] = {}
    done = threading.Event()

    def watch() -> None:
        while True:
            finished = done.is_set()  # one more look after the producer returned: a loaded
            for source in ("registered_users", "gym_logins", "kafka_multiplex"):  # machine may
                folder = landing / source  # not have scheduled this thread since the last rename
                if folder.is_dir():
                    for path in folder.iterdir():
                        if not path.name.startswith(("_", ".")) and path not in seen:
                            seen[path] = path.read_bytes()
            if finished:
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = _high_watermarks(kafka_broker)
    lines: list[str] = []
    try:
        report = play(kafka_broker, landing, config, interval=0.4, echo=lines.append)
    finally:
        done.set()
        watcher.join()

    assert len([s for s in lines if s.startswith("batch ")]) == len(report.batches) == 3 and not report.stopped
    began = [b.began for b in report.batches]
    assert all(later - earlier >= 0.39 for earlier, later in zip(began, began[1:], strict=False))
    published = sorted(p for p in landing.rglob("*") if p.is_file())
    assert published and not (landing / "kafka_multiplex").exists()
    assert not [p for p in published if p.name.startswith(("_", "."))]
    for path in published:
        original = reference / path.parent.name / path.name.split("-", 2)[2]
        # What a reader saw the first time the name appeared is the whole, final file.
        assert seen[path] == path.read_bytes() == original.read_bytes(), path
    assert len(published) == sum(len(list((reference / s).glob("batch-*"))) for s in ("registered_users", "gym_logins"))

    got = [m for messages in _consume(kafka_broker, start).values() for m in messages]
    assert Counter(m.topic() for m in got) == Counter(report.kafka.produced)
    payloads = [p for p in map(_payload, got) if isinstance(p, dict)]
    stopped = {p.get("user_id") for p in payloads if p.get("action") == "stop"}
    updates = {p.get("user_id") for p in payloads if p.get("update_type") == "update"}
    assert report.visible_profile_changes >= 1 and stopped & updates


def test_live_producer_stops_when_asked(kafka_broker: str, tmp_path: Path) -> None:
    stop = threading.Event()
    started = time.monotonic()
    report = play(kafka_broker, tmp_path, SimulatorConfig.tiny(seed=5, batches=3), interval=30,
                  stop=stop, echo=lambda s: stop.set() if s.startswith("batch ") else None)
    assert report.stopped and len(report.batches) == 1
    assert time.monotonic() - started < 10
