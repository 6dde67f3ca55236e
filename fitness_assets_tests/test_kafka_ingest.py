"""Kafka -> bronze against a real Kafka-protocol broker (librdkafka's mock cluster): exactly
once across reruns, restarts and crashes on both sides of the commit; order within a
partition; several partitions; bad records quarantined with the file feed's reasons."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from dagster import AssetKey

from fitness_assets.assets.bronze.checks import reconcile, retention_loss_check
from fitness_assets.assets.checks_lib import evaluate_checks
from fitness_assets.devstack import LOCAL_BROKER_AFTER_EARLIER_ONE
from fitness_assets.lakehouse.store import DeltaRsTableStore
from fitness_assets.pipelines.bronze_kafka import ingest_kafka, lost_to_retention, stored_positions
from fitness_assets.streaming.broker import MockKafkaBroker
from fitness_assets.streaming.settings import KafkaSettings
from fitness_assets.streaming.source import KafkaReader, KafkaUnavailable, PositionsAhead, TopicReplaced
from fitness_assets.tables import DATE_LOOKUP, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR
from fitness_assets.transforms import bronze as parsers
from fitness_assets.transforms import reference

BASE_MS = 1_700_000_000_000
PARTITIONS = 3


@pytest.fixture
def broker():
    """A broker of this test's own: ingestion reads every record the topics hold."""
    with MockKafkaBroker(port=0, partitions=PARTITIONS) as b:
        yield b.bootstrap_servers


@pytest.fixture
def lake(store, spark):
    store.overwrite(DATE_LOOKUP, reference.date_lookup(spark, dt.date(2023, 1, 1), dt.date(2024, 12, 31)))
    calendar = store.read(DATE_LOOKUP)
    return store, lambda records: parsers.parse_kafka_records(records, calendar)


def _bpm(i: int) -> dict:
    return {"device_id": 100 + i % 7, "time": 1_700_000_000 + i, "heartrate": 60.0 + i % 50}


def _produce(bootstrap: str, records: list[tuple[str, int, bytes | None]]) -> dict[tuple[str, int, int], bytes | None]:
    """Produce (topic, partition, value); returns what the broker stored at each offset."""
    stored: dict[tuple[str, int, int], bytes | None] = {}

    def delivered(err, msg):
        assert err is None, err
        stored[(msg.topic(), msg.partition(), msg.offset())] = msg.value()

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for n, (topic, partition, value) in enumerate(records):
        producer.produce(topic, value=value, key=str(n % 5), partition=partition, timestamp=BASE_MS + n,
                         on_delivery=delivered)
    producer.flush(30)
    return stored


def _ingest(store, spark, parse, bootstrap, **kwargs):
    """One run, validating without Spark (the default path); ``parse`` (the Spark parser) is
    used instead when ``spark_parse`` is set, with the records staged as Parquet as in Spark."""
    settings = KafkaSettings(bootstrap_servers=bootstrap, poll_timeout_seconds=10)
    staging = Path(store.root) / "_staging"
    use_spark = kwargs.pop("spark_parse", False)
    with KafkaReader(settings) as reader:  # a new consumer each run, as a new run process has
        report = ingest_kafka(store, spark, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
                              parse if use_spark else None, staging=staging, **kwargs)
    assert not list(staging.glob("*")), "staged record files are removed after their batch"
    return report


def _bronze(store) -> dict[tuple[str, int, int], str]:
    rows = store.read(KAFKA_MULTIPLEX_BZ).select("topic", "partition", "offset", "value", "source_file").collect()
    keys = [(r["topic"], r["partition"], r["offset"]) for r in rows]
    assert len(keys) == len(set(keys)), "a record landed twice"
    assert all(r["source_file"] == f"kafka://{r['topic']}/{r['partition']}" for r in rows)
    return {(r["topic"], r["partition"], r["offset"]): r["value"] for r in rows}


def test_records_land_exactly_once_in_partition_order_across_bounded_runs_and_restarts(lake, spark, broker):
    store, parse = lake
    first = _produce(broker, [("bpm", i % PARTITIONS, json.dumps(_bpm(i)).encode()) for i in range(240)])
    report = _ingest(store, spark, parse, broker, max_records_per_batch=50, max_batches=2)
    assert (report.batches, report.records) == (2, 100)
    assert sum(report.lag.values()) == 140  # the rest waits for the next run
    for _ in range(2):
        _ingest(store, spark, parse, broker, max_records_per_batch=50, max_batches=2)
    second = _produce(broker, [("bpm", i % PARTITIONS, json.dumps(_bpm(i)).encode()) for i in range(240, 300)]
                      + [("workout", 0, json.dumps({"user_id": 1, "workout_id": 2, "timestamp": 1_700_000_000,
                                                     "action": "start", "session_id": 3}).encode())])
    final = _ingest(store, spark, parse, broker, max_records_per_batch=1000, max_batches=5)
    assert sum(final.lag.values()) == 0

    landed = _bronze(store)
    produced = first | second
    assert landed.keys() == produced.keys()
    assert all(landed[k] == produced[k].decode() for k in produced)
    for topic, partition in {(t, p) for t, p, _ in produced}:  # contiguous offsets: nothing skipped
        offsets = sorted(o for t, p, o in landed if (t, p) == (topic, partition))
        assert offsets == list(range(len(offsets)))

    before = store.version(KAFKA_MULTIPLEX_BZ)
    again = _ingest(store, spark, parse, broker)
    assert (again.records, store.version(KAFKA_MULTIPLEX_BZ)) == (0, before)  # nothing new, no commit

    positions, counts = stored_positions(store, KAFKA_MULTIPLEX_BZ)
    assert positions == {f"{t}/{p}": max(o for tt, pp, o in produced if (tt, pp) == (t, p)) + 1
                         for t, p, _ in produced}
    assert sum(counts.values()) == len(produced)
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "fitness-assets"})
    committed = consumer.committed([TopicPartition(t, p) for t, p in {(t, p) for t, p, _ in produced}], timeout=10)
    consumer.close()
    assert {f"{tp.topic}/{tp.partition}": tp.offset for tp in committed} == positions  # after the Delta commit


BAD = [
    (b"{not json", "malformed_payload"),
    (json.dumps({"workout_id": 1, "timestamp": 1, "action": "start", "session_id": 1}).encode(),
     "missing_field:user_id"),
    (json.dumps({"user_id": "x", "workout_id": 1, "timestamp": 1, "action": "start", "session_id": 1}).encode(),
     "wrong_type:user_id"),
    (json.dumps({"user_id": 1, "workout_id": 1, "timestamp": 1, "action": "jump", "session_id": 1}).encode(),
     "invalid_value:action"),
    (b"\xff\xfe\x00 not utf-8", "invalid_value:value"),
    (None, "missing_field:value"),
]


def test_bad_records_are_quarantined_with_the_file_feeds_reasons(lake, spark, broker, settings, tmp_path):
    store, parse = lake
    produced = _produce(broker, [("workout", 1, value) for value, _ in BAD] + [("bpm", 2, json.dumps(_bpm(1)).encode())])
    spark_store = DeltaRsTableStore(str(tmp_path / "spark_lake"), lambda: spark)
    spark_store.overwrite(DATE_LOOKUP, store.read(DATE_LOOKUP))
    _ingest(spark_store, spark, parse, broker, spark_parse=True)
    report = _ingest(store, spark, parse, broker)
    columns = ["source_file", "line", "raw", "reason"]
    assert (sorted(store.read(KAFKA_MULTIPLEX_QR).select(*columns).collect())
            == sorted(spark_store.read(KAFKA_MULTIPLEX_QR).select(*columns).collect())), "same rows as the Spark parser"
    assert (sorted(store.read(KAFKA_MULTIPLEX_BZ).drop("load_time").collect())
            == sorted(spark_store.read(KAFKA_MULTIPLEX_BZ).drop("load_time").collect()))
    assert report.rows_written == 1 and report.rows_quarantined == len(BAD)
    rows = store.read(KAFKA_MULTIPLEX_QR).collect()
    by_offset = {r["line"]: r for r in rows}
    assert {by_offset[o]["reason"] for (t, _, o) in produced if t == "workout"} == {r for _, r in BAD}
    assert all(r["source_file"] == "kafka://workout/1" and r["raw"] for r in rows)

    # The same records as a `kafka_multiplex/` landing file get the same reasons.
    decodable = [(v, r) for v, r in BAD if v is None or not v.startswith(b"\xff")]
    lines = [json.dumps({"key": None, "value": None if v is None else v.decode(), "topic": "workout", "partition": 1,
                         "offset": n, "timestamp": BASE_MS}) for n, (v, _) in enumerate(decodable)]
    file_store = DeltaRsTableStore(str(tmp_path / "files_lake"), lambda: spark)
    from fitness_assets.pipelines.bronze import ingest

    (tmp_path / "files" / "kafka_multiplex").mkdir(parents=True)
    (tmp_path / "files" / "kafka_multiplex" / "batch.json").write_text("\n".join(lines) + "\n")
    calendar = store.read(DATE_LOOKUP)
    ingest(file_store, spark, str(tmp_path / "files"), "kafka_multiplex", KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
           lambda lines: parsers.parse_kafka_multiplex(lines, calendar))
    file_reasons = Counter(r["reason"] for r in file_store.read(KAFKA_MULTIPLEX_QR).collect())
    assert file_reasons == Counter(r for _, r in decodable)


class CrashAfterCommit(DeltaRsTableStore):
    """A process that dies right after its bronze commit, before anything else happens."""

    def append(self, spec, data, **kwargs):
        result = super().append(spec, data, **kwargs)
        if spec == KAFKA_MULTIPLEX_BZ:
            raise SystemExit("killed after the commit")
        return result


def _crash_before_commit(spec):
    if spec == KAFKA_MULTIPLEX_BZ:
        raise SystemExit("killed before the commit")


def test_a_crash_on_either_side_of_the_commit_loses_and_doubles_nothing(lake, spark, broker, settings):
    store, parse = lake
    records = [("bpm", i % PARTITIONS, json.dumps(_bpm(i)).encode()) for i in range(60)]
    records += [("workout", 0, b"{broken") for _ in range(4)]
    produced = _produce(broker, records)

    store.before_commit = _crash_before_commit
    with pytest.raises(SystemExit):
        _ingest(store, spark, parse, broker)
    store.before_commit = None
    assert store.row_count(KAFKA_MULTIPLEX_BZ) == 0 and stored_positions(store, KAFKA_MULTIPLEX_BZ) == ({}, {})

    crashing = CrashAfterCommit(settings.lakehouse_root, lambda: spark)
    with pytest.raises(SystemExit):
        _ingest(crashing, spark, parse, broker, max_records_per_batch=30)
    committed = store.row_count(KAFKA_MULTIPLEX_BZ)
    assert 0 < committed < 60

    _ingest(store, spark, parse, broker)
    landed = _bronze(store)
    assert len(landed) == 60 and store.row_count(KAFKA_MULTIPLEX_QR) == 4
    quarantined = store.read(KAFKA_MULTIPLEX_QR).select("source_file", "line").collect()
    assert len({(r["source_file"], r["line"]) for r in quarantined}) == 4
    assert set(landed) | {("workout", 0, r["line"]) for r in quarantined} == set(produced)


class _WatermarksFromBeforeRetention(KafkaReader):
    """Answers the watermark question as the broker did just before retention deleted its
    oldest records: the deletion falls between that answer and the fetch, which the consumer
    then starts at the earliest record kept, later than asked."""

    def watermarks(self):
        return {key: (min(low, 20), high) for key, (low, high) in super().watermarks().items()}


@pytest.mark.parametrize("deleted", ["before the read", "during the read"])
def test_records_deleted_by_retention_before_they_were_read_are_recorded_and_warned(lake, spark, settings, deleted,
                                                                                  monkeypatch):
    """The mock broker keeps ~5 MiB per partition and deletes the oldest records beyond it, as
    a topic's retention does: records produced while bronze was not reading are lost. The
    batch that moves past them records the gap in the table's log, the rest lands exactly once,
    the reconciliation still holds, and ``no_records_lost_to_retention`` warns with the gap;
    also when the records were deleted after the batch asked where the partition begins."""
    store, parse = lake
    check = retention_loss_check(KAFKA_MULTIPLEX_BZ)
    with MockKafkaBroker(port=0, partitions=1) as broker:
        bootstrap = broker.bootstrap_servers
        first = _produce(bootstrap, [("bpm", 0, json.dumps(_bpm(i)).encode()) for i in range(20)])
        assert _ingest(store, spark, parse, bootstrap).lost == {}
        assert evaluate_checks(store, None, [check])[check.name].passed  # nothing lost so far

        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(20, 920):  # ~9 MiB: more than the broker keeps
            producer.produce("bpm", key=b"k" * 10_000, value=json.dumps(_bpm(i)).encode(), partition=0,
                             timestamp=BASE_MS + i)
            if i % 100 == 0:
                producer.flush(30)
        producer.flush(30)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
        low, high = consumer.get_watermark_offsets(TopicPartition("bpm", 0), timeout=10)
        consumer.close()
        assert 20 < low < high == 920, "the broker deleted the oldest records"

        if deleted == "during the read":
            monkeypatch.setattr(f"{__name__}.KafkaReader", _WatermarksFromBeforeRetention)
        report = _ingest(store, spark, parse, bootstrap, max_records_per_batch=10_000)
        assert report.lost == {"bpm/0": low - 20} and report.records == high - low

    landed = _bronze(store)
    assert sorted(o for _, _, o in landed) == [*range(20), *range(low, high)]  # nothing doubled
    assert all(landed[k] == v.decode() for k, v in first.items())
    assert lost_to_retention(store, KAFKA_MULTIPLEX_BZ) == {"kafka://bpm/0": [[20, low]]}
    assert stored_positions(store, KAFKA_MULTIPLEX_BZ)[0] == {"bpm/0": high}

    result = evaluate_checks(store, None, [check])[check.name]
    assert not result.passed and check.severity.value == "WARN"
    assert result.metadata["lost_records"].value == low - 20
    assert result.metadata["lost_by_partition"].value == {"kafka://bpm/0": low - 20}
    passed, _ = reconcile(store, settings.landing_root, "kafka_multiplex", KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR)
    assert passed, "the records read are all accounted for"


def test_a_topic_that_holds_fewer_records_than_were_read_is_refused_in_one_line(lake, spark, settings, run,
                                                                                 dagster_instance, monkeypatch):
    """A local broker restarted empty (or a topic made again) starts its offsets at 0 again:
    reading on from the stored positions would skip its first records without a word, so the
    ingestion stops, names the partition, and commits nothing."""
    store, parse = lake
    with MockKafkaBroker(port=0, partitions=1) as broker:
        _produce(broker.bootstrap_servers, [("bpm", 0, json.dumps(_bpm(i)).encode()) for i in range(30)])
        _ingest(store, spark, parse, broker.bootstrap_servers)
    version = store.version(KAFKA_MULTIPLEX_BZ)
    with MockKafkaBroker(port=0, partitions=1) as broker:  # a new broker: its offsets start at 0
        _produce(broker.bootstrap_servers, [("bpm", 0, json.dumps(_bpm(i)).encode()) for i in range(10)])
        with pytest.raises(PositionsAhead) as refused:
            _ingest(store, spark, parse, broker.bootstrap_servers)
    message = str(refused.value)
    assert "\n" not in message and "bpm/0 ends at offset 10, bronze read up to 30" in message
    assert "fitness-assets rebuild bronze" in message
    assert store.version(KAFKA_MULTIPLEX_BZ) == version and len(_bronze(store)) == 30

    # In the graph: the step fails on it, but the landing files it committed first are reported.
    landing = Path(settings.landing_root) / "kafka_multiplex"
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "late.json").write_text(json.dumps({"key": "k", "value": json.dumps(_bpm(99)), "topic": "bpm",
                                                   "partition": 0, "offset": 500, "timestamp": BASE_MS}) + "\n")
    with MockKafkaBroker(port=0, partitions=1) as broker:
        monkeypatch.setenv("FITNESS_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
        report = run("bronze/kafka_multiplex_bz", expect_success=False)
    assert report.failures["bronze__kafka_multiplex_bz"].startswith("PositionsAhead: Kafka holds fewer records")
    reported = dagster_instance.get_latest_materialization_event(AssetKey(["bronze", "kafka_multiplex_bz"]))
    assert reported.asset_materialization.metadata["new_files"].value == 1
    assert reported.asset_materialization.metadata["delta_version"].value == store.version(KAFKA_MULTIPLEX_BZ)
    monkeypatch.delenv("FITNESS_KAFKA_BOOTSTRAP_SERVERS")

    # `fitness-assets live` would start exactly such a broker: it refuses before starting anything.
    env = {k: v for k, v in os.environ.items() if k != "FITNESS_KAFKA_BOOTSTRAP_SERVERS"}
    env |= {"FITNESS_LAKEHOUSE_ROOT": settings.lakehouse_root, "FITNESS_LANDING_ROOT": settings.landing_root,
            "DAGSTER_HOME": str(Path(settings.lakehouse_root).parent / "dagster_home")}
    live = subprocess.run([sys.executable, "-m", "fitness_assets.cli", "live", "--port", "0", "--ui-port", "0"],
                          env=env, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert (live.returncode, live.stderr.strip()) == (2, LOCAL_BROKER_AFTER_EARLIER_ONE)


def _address_nothing_answers() -> str:
    with socket.socket() as probe:  # a port just free: a connection to it is refused
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_a_broker_that_does_not_answer_stops_the_kafka_read_in_one_line_without_the_clients_noise(
        lake, spark, settings, run, dagster_instance, monkeypatch, capfd):
    """librdkafka retries a refused connection every back-off and printed each failure (~200
    lines in 10 s). The read now stops in one line that says what to start or fix and what the
    client saw, prints nothing else, and the step still reports the landing files it committed."""
    store, parse = lake
    address = _address_nothing_answers()
    with KafkaReader(KafkaSettings(bootstrap_servers=address), metadata_timeout=2) as reader:
        with pytest.raises(KafkaUnavailable) as refused:
            reader.watermarks()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"Kafka at {address} did not answer within 2 s (")
    assert "Connection refused" in message and "FITNESS_KAFKA_BOOTSTRAP_SERVERS" in message
    assert "%3|" not in capfd.readouterr().err, "librdkafka's log lines are not printed"

    landing = Path(settings.landing_root) / "kafka_multiplex"
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "while_down.json").write_text(json.dumps({"key": "k", "value": json.dumps(_bpm(1)), "topic": "bpm",
                                                         "partition": 0, "offset": 7, "timestamp": BASE_MS}) + "\n")
    monkeypatch.setenv("FITNESS_KAFKA_BOOTSTRAP_SERVERS", address)
    report = run("bronze/kafka_multiplex_bz", expect_success=False)
    assert report.failures["bronze__kafka_multiplex_bz"].startswith(f"KafkaUnavailable: Kafka at {address} did not")
    reported = dagster_instance.get_latest_materialization_event(AssetKey(["bronze", "kafka_multiplex_bz"]))
    assert reported.asset_materialization.metadata["new_files"].value == 1
    assert store.read(KAFKA_MULTIPLEX_BZ).count() == 1 and stored_positions(store, KAFKA_MULTIPLEX_BZ)[0] == {}
    assert capfd.readouterr().err.count("Connection refused") <= 1


def test_a_topic_made_again_that_holds_more_records_than_were_read_is_refused(lake, spark):
    """Offsets cannot tell a topic made again that already holds more records than bronze read:
    its records from the stored position on would be read, and its first ones skipped, without a
    word. The record before each position is compared with the one bronze read there."""
    store, parse = lake
    with MockKafkaBroker(port=0, partitions=2) as broker:
        _produce(broker.bootstrap_servers, [("bpm", i % 2, json.dumps(_bpm(i)).encode()) for i in range(30)])
        _ingest(store, spark, parse, broker.bootstrap_servers, max_records_per_batch=7)
        # The same topic, more records: the record before each position is the one read, so it goes on.
        _produce(broker.bootstrap_servers, [("bpm", i % 2, json.dumps(_bpm(i)).encode()) for i in range(30, 40)])
        _ingest(store, spark, parse, broker.bootstrap_servers)
    assert len(_bronze(store)) == 40
    version = store.version(KAFKA_MULTIPLEX_BZ)
    with MockKafkaBroker(port=0, partitions=2) as broker:  # made again, with other records, and more of them
        _produce(broker.bootstrap_servers, [("bpm", i % 2, json.dumps(_bpm(1000 + i)).encode()) for i in range(60)])
        with pytest.raises(TopicReplaced) as refused:
            _ingest(store, spark, parse, broker.bootstrap_servers)
    message = str(refused.value)
    assert "\n" not in message and "bpm/0 offset 19, bpm/1 offset 19" in message
    assert "fitness-assets rebuild bronze" in message and isinstance(refused.value, PositionsAhead)
    assert store.version(KAFKA_MULTIPLEX_BZ) == version and len(_bronze(store)) == 40

    # The same records at the same offsets (a broker replayed from the same source) are read on.
    with MockKafkaBroker(port=0, partitions=2) as broker:
        for batch in (range(30), range(30, 40), range(40, 44)):  # as produced the first time
            _produce(broker.bootstrap_servers, [("bpm", i % 2, json.dumps(_bpm(i)).encode()) for i in batch])
        report = _ingest(store, spark, parse, broker.bootstrap_servers)
    assert report.records == 4 and sorted(o for _, _, o in _bronze(store)) == sorted([*range(22)] * 2)


class _EverythingUnreadDeleted(KafkaReader):
    """A partition whose unread records retention deleted, every one, with nothing new after
    them: its low watermark equals its end, past the stored position. The mock broker always
    keeps its newest ~5 MiB, so it cannot reach this state; only the broker's answer to the
    watermark question is given here, the reading and committing are the real ones."""

    def __init__(self, watermarks: dict[str, tuple[int, int]]):  # no consumer: nothing is assigned
        self._watermarks = watermarks

    def watermarks(self):
        return dict(self._watermarks)

    def commit(self, next_offsets):
        pass

    def close(self):
        pass


def test_a_gap_with_nothing_after_it_is_recorded_and_moved_past(lake, spark, broker):
    store, parse = lake
    _produce(broker, [("bpm", 0, json.dumps(_bpm(i)).encode()) for i in range(20)])
    _ingest(store, spark, parse, broker)
    rows = len(_bronze(store))
    report = ingest_kafka(store, spark, _EverythingUnreadDeleted({"bpm/0": (50, 50)}), KAFKA_MULTIPLEX_BZ,
                          KAFKA_MULTIPLEX_QR)
    assert (report.records, report.lost, report.batches) == (0, {"bpm/0": 30}, 1)
    assert lost_to_retention(store, KAFKA_MULTIPLEX_BZ) == {"kafka://bpm/0": [[20, 50]]}
    assert stored_positions(store, KAFKA_MULTIPLEX_BZ)[0]["bpm/0"] == 50 and len(_bronze(store)) == rows
    version = store.version(KAFKA_MULTIPLEX_BZ)
    again = ingest_kafka(store, spark, _EverythingUnreadDeleted({"bpm/0": (50, 50)}), KAFKA_MULTIPLEX_BZ,
                         KAFKA_MULTIPLEX_QR)
    assert (again.lost, store.version(KAFKA_MULTIPLEX_BZ)) == ({}, version)  # recorded once, no new commit


class _OvertakenReader(KafkaReader):
    """A reader whose first fetch lets another run take the same records in first (a CLI run
    beside the daemon's, committing while this one fetches)."""

    def __init__(self, settings: KafkaSettings, other_run):
        super().__init__(settings)
        self.other_run = other_run

    def read(self, *args, **kwargs):
        if self.other_run is not None:
            other_run, self.other_run = self.other_run, None
            other_run()
        return super().read(*args, **kwargs)


def test_a_run_overtaken_while_it_fetches_takes_nothing_in_twice(lake, spark, broker):
    store, parse = lake
    produced = _produce(broker, [("bpm", i % PARTITIONS, json.dumps(_bpm(i)).encode()) for i in range(40)])
    other = []
    settings = KafkaSettings(bootstrap_servers=broker, poll_timeout_seconds=10)
    with _OvertakenReader(settings, lambda: other.append(_ingest(store, spark, parse, broker))) as reader:
        report = ingest_kafka(store, spark, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR, None)
    assert other[0].records == 40 and report.records == 0 and report.skipped_batches == 1
    assert set(_bronze(store)) == set(produced)  # each record once


class _WatermarksFromBeforeTheLogWentBack(KafkaReader):
    """Answers the first watermark question as the broker did just before the partition's log
    went back (a topic made again, an unclean leader election): the fetch at the stored
    position is then out of range, and the consumer restarts from the earliest record."""

    asked = 0

    def watermarks(self):
        marks = super().watermarks()
        type(self).asked += 1
        return {key: (low, 20) for key, (low, _) in marks.items()} if type(self).asked == 1 else marks


def test_a_log_that_went_back_during_the_read_is_refused_not_taken_in_twice(lake, spark):
    store, parse = lake
    with MockKafkaBroker(port=0, partitions=1) as old:
        _produce(old.bootstrap_servers, [("bpm", 0, json.dumps(_bpm(i)).encode()) for i in range(15)])
        _ingest(store, spark, parse, old.bootstrap_servers)
    before = _bronze(store)
    with MockKafkaBroker(port=0, partitions=1) as new:  # the log now holds 10 other records
        _produce(new.bootstrap_servers, [("bpm", 0, json.dumps(_bpm(1000 + i)).encode()) for i in range(10)])
        settings = KafkaSettings(bootstrap_servers=new.bootstrap_servers, poll_timeout_seconds=10)
        with _WatermarksFromBeforeTheLogWentBack(settings) as reader, pytest.raises(TopicReplaced, match="bpm/0"):
            ingest_kafka(store, spark, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR, None, max_batches=1)
    assert _bronze(store) == before and stored_positions(store, KAFKA_MULTIPLEX_BZ)[0] == {"bpm/0": 15}


class _OvertakenAfterItsFetch(KafkaReader):
    """The other run commits after this run's fetch and before its commit."""

    def __init__(self, settings: KafkaSettings, other_run):
        super().__init__(settings)
        self.other_run = other_run

    def read(self, *args, **kwargs):
        batch = super().read(*args, **kwargs)
        if self.other_run is not None:
            other_run, self.other_run = self.other_run, None
            other_run()
        return batch


def test_a_run_overtaken_after_its_fetch_leaves_the_other_runs_quarantine_rows(lake, spark, broker):
    """The run that lost the race read fewer records (a smaller cap, an earlier look): its
    quarantine write replaced every row from its start on, the other run's included, and its
    bronze commit was then skipped: rejected records ended in neither table."""
    store, parse = lake
    _produce(broker, [("workout", 0, b"{broken %d" % i) for i in range(10)])
    other = []
    settings = KafkaSettings(bootstrap_servers=broker, poll_timeout_seconds=10)
    with _OvertakenAfterItsFetch(settings, lambda: other.append(_ingest(store, spark, parse, broker))) as reader:
        report = ingest_kafka(store, spark, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR, None,
                              max_records_per_batch=3, max_batches=1)
    assert other[0].rows_quarantined == 10 and report.skipped_batches == 1
    lines = sorted(r["line"] for r in store.read(KAFKA_MULTIPLEX_QR).collect())
    assert lines == list(range(10))


def test_a_record_without_a_timestamp_or_with_a_negative_one_is_quarantined_as_missing_it(lake, spark, broker):
    """Kafka's -1 means "no timestamp" (records of the oldest message format, some clients):
    it was taken for a time in 1969."""
    store, parse = lake
    producer = Producer({"bootstrap.servers": broker})
    for offset, timestamp in enumerate((-1, -5, BASE_MS)):
        producer.produce("bpm", value=json.dumps(_bpm(offset)).encode(), key=b"k", partition=0, timestamp=timestamp)
    producer.flush(30)
    _ingest(store, spark, parse, broker)
    quarantined = {r["line"]: r["reason"] for r in store.read(KAFKA_MULTIPLEX_QR).collect()}
    assert quarantined == {0: "missing_field:timestamp", 1: "missing_field:timestamp"}
    assert [o for _, _, o in _bronze(store)] == [2]


def test_a_fetch_that_times_out_for_a_moment_is_fetched_again_not_a_failed_run(lake, spark):
    """A broker slow for a moment (a rolling restart) fails a fetch with REQUEST_TIMED_OUT;
    librdkafka fetches again after a back-off, and so does the read."""
    import ctypes

    store, parse = lake
    with MockKafkaBroker(port=0, partitions=1) as broker:
        produced = _produce(broker.bootstrap_servers, [("bpm", 0, json.dumps(_bpm(i)).encode()) for i in range(20)])
        push = broker._lib.rd_kafka_mock_push_request_errors_array
        push.argtypes = [ctypes.c_void_p, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
        push.restype = None
        request_timed_out, fetch = 7, 1
        push(broker._cluster, fetch, 2, (ctypes.c_int * 2)(request_timed_out, request_timed_out))
        report = _ingest(store, spark, parse, broker.bootstrap_servers)
    assert report.records == 20 and set(_bronze(store)) == set(produced)
