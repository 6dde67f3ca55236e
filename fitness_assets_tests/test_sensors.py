"""The source sensors tick by tick against a real Dagster instance, a real landing folder and
a real Kafka-protocol broker: new data -> a run request keyed by the source position; nothing
new -> a skip that says why; the cursor moves; lag is recorded on the topics."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from confluent_kafka import Producer
from dagster import AssetKey, AssetMaterialization, AssetObservation, DagsterRunStatus, RunRequest, build_sensor_context
from dagster._core.storage.dagster_run import DagsterRun

from fitness_assets.automation.sensors import KAFKA_SENSOR, LANDING_SENSOR, MAX_ATTEMPTS
from fitness_assets.definitions import build_definitions
from fitness_assets.pipelines.bronze_kafka import ingest_kafka
from fitness_assets.settings import AutomationSettings
from fitness_assets.streaming.broker import MockKafkaBroker
from fitness_assets.streaming.settings import KafkaSettings
from fitness_assets.streaming.source import KafkaReader
from fitness_assets.tables import DATE_LOOKUP, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR
from fitness_assets.transforms import bronze as parsers
from fitness_assets.transforms import reference

BRONZE_USERS = {AssetKey(["bronze", "registered_users_bz"]), AssetKey(["quarantine", "registered_users_bz"])}
BRONZE_LOGINS = {AssetKey(["bronze", "gym_logins_bz"]), AssetKey(["quarantine", "gym_logins_bz"])}
BRONZE_KAFKA = {AssetKey(["bronze", "kafka_multiplex_bz"]), AssetKey(["quarantine", "kafka_multiplex_bz"])}
CALENDAR = AssetKey(["reference", "date_lookup"])


class Sensor:
    """Ticks of one sensor of the real definitions, carrying its cursor like the daemon does."""

    def __init__(self, defs, name, instance):
        self.definition, self.defs, self.instance, self.cursor = defs.resolve_sensor_def(name), defs, instance, None
        self.name = name

    def tick(self):
        with build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.defs.resources,
                                  repository_def=self.defs.get_repository_def(), sensor_name=self.name) as context:
            data = self.definition.evaluate_tick(context)
        self.cursor = data.cursor if data.cursor is not None else self.cursor
        return data


def _write(root, source, name, text="user_id,device_id,mac_address,registration_timestamp\n"):
    folder = root / source
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def _failed(instance, sensor_name: str, request) -> None:
    """The run the daemon made of ``request``, failed (a killed worker)."""
    instance.add_run(DagsterRun(job_name="__ASSET_JOB", status=DagsterRunStatus.FAILURE,
                                tags={"dagster/sensor_name": sensor_name, "dagster/run_key": request.run_key}))


def test_landing_sensor_requests_each_new_delivery_once(settings, dagster_instance, tmp_path):
    defs = build_definitions(settings, kafka=KafkaSettings(), automation=AutomationSettings())
    sensor = Sensor(defs, LANDING_SENSOR, dagster_instance)
    landing = tmp_path / "landing"

    # A failed run of another request (another cursor's) is not this sensor's to retry.
    _failed(dagster_instance, LANDING_SENSOR, RunRequest(run_key="landing:earlier"))
    missing = sensor.tick()
    assert not missing.run_requests and missing.skip_message.startswith(f"the landing root {landing} does not exist")
    landing.mkdir()
    first = sensor.tick()
    assert not first.run_requests and "no new or changed files" in first.skip_message

    _write(landing, "registered_users", "batch-0001.csv")
    _write(landing, "gym_logins", "batch-0001.csv")
    _write(landing, "gym_logins", "_batch-0002.csv.tmp")  # still being written: not data yet
    second = sensor.tick()
    (request,) = second.run_requests
    assert request.run_key.startswith("landing:")
    assert set(request.asset_selection) == BRONZE_USERS | BRONZE_LOGINS
    arrived = {e.asset_key for e in second.asset_events if isinstance(e, AssetMaterialization)}
    assert arrived == {AssetKey(["landing", "registered_users"]), AssetKey(["landing", "gym_logins"])}
    assert json.loads(sensor.cursor)["requested"] == ["gym_logins", "registered_users"]

    third = sensor.tick()
    assert not third.run_requests and "no new or changed files" in third.skip_message

    # A name that sorts before the ones acted on (a correction file), and a file rewritten in
    # place, are requested too: the bronze step takes in every file it has not ingested.
    _write(landing, "gym_logins", "0000-correction.csv")
    (early,) = sensor.tick().run_requests
    assert set(early.asset_selection) == BRONZE_LOGINS
    assert not sensor.tick().run_requests
    _write(landing, "gym_logins", "0000-correction.csv", "mac_address,gym,login,logout\n")
    (rewritten,) = sensor.tick().run_requests
    assert set(rewritten.asset_selection) == BRONZE_LOGINS and rewritten.run_key != early.run_key

    # Its run failed (a killed worker): requested again, as a new attempt, up to MAX_ATTEMPTS.
    ran = rewritten
    for attempt in range(2, MAX_ATTEMPTS + 1):
        _failed(dagster_instance, LANDING_SENSOR, ran)
        (ran,) = sensor.tick().run_requests
        assert ran.run_key.endswith(f":attempt-{attempt}") and set(ran.asset_selection) == BRONZE_LOGINS
    _failed(dagster_instance, LANDING_SENSOR, ran)
    given_up = sensor.tick()
    assert not given_up.run_requests and f"{MAX_ATTEMPTS} runs for them failed" in given_up.skip_message

    _write(landing, "registered_users", "batch-0002.csv")
    _write(landing, "kafka_multiplex", "batch-0002.json", "{}\n")
    running = DagsterRun(job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED,
                        tags={"dagster/sensor_name": LANDING_SENSOR})
    dagster_instance.add_run(running)
    busy = sensor.tick()  # the running run takes in what arrived: no duplicate request
    assert not busy.run_requests and "still queued or running" in busy.skip_message
    dagster_instance.report_run_canceled(running)
    # the multiplex needs the calendar; this lakehouse has none, so it rides along, even when the
    # instance remembers making one (in a lakehouse since removed)
    dagster_instance.report_runless_asset_event(AssetMaterialization(CALENDAR))
    fourth = sensor.tick()
    (again,) = fourth.run_requests
    assert again.run_key not in (request.run_key,)
    # ... and the folder whose runs failed last rides along: new files elsewhere do not make the
    # sensor forget it.
    assert set(again.asset_selection) == BRONZE_USERS | BRONZE_KAFKA | BRONZE_LOGINS | {CALENDAR}


@pytest.fixture
def broker():
    with MockKafkaBroker(port=0, partitions=2) as b:
        yield b.bootstrap_servers


def _produce(bootstrap, n, start=0):
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(start, start + n):
        producer.produce("bpm", json.dumps({"device_id": 7, "time": 1_700_000_000 + i, "heartrate": 70}),
                         partition=i % 2)
    producer.flush(30)


def test_kafka_sensor_requests_on_new_records_and_records_the_lag(settings, dagster_instance, broker, store, spark):
    off = build_definitions(settings, kafka=KafkaSettings(), automation=AutomationSettings())
    assert "Kafka is off" in Sensor(off, KAFKA_SENSOR, dagster_instance).tick().skip_message

    kafka = KafkaSettings(bootstrap_servers=broker)
    defs = build_definitions(settings, kafka=kafka, automation=AutomationSettings())
    sensor = Sensor(defs, KAFKA_SENSOR, dagster_instance)
    assert "lag 0" in sensor.tick().skip_message  # topics exist, nothing in them

    _produce(broker, 10)
    ticked = sensor.tick()
    (request,) = ticked.run_requests
    assert request.run_key.startswith("kafka:") and set(request.asset_selection) == BRONZE_KAFKA | {CALENDAR}
    lag = [e for e in ticked.asset_events if isinstance(e, AssetObservation) and e.asset_key == AssetKey(["kafka", "bpm"])]
    assert lag[0].metadata["lag"].value == 10
    assert lag[0].metadata["lag_by_partition"].value == {"bpm/0": 5, "bpm/1": 5}
    assert any(isinstance(e, AssetMaterialization) and e.asset_key == AssetKey(["kafka", "bpm"])
               for e in ticked.asset_events)

    waiting = sensor.tick()
    assert not waiting.run_requests and "already requested" in waiting.skip_message
    # The run failed or was killed, and no record came since: requested again, up to MAX_ATTEMPTS.
    ran = request
    for attempt in range(2, MAX_ATTEMPTS + 1):
        _failed(dagster_instance, KAFKA_SENSOR, ran)
        (ran,) = sensor.tick().run_requests
        assert ran.run_key == f"{request.run_key}:attempt-{attempt}"
    _failed(dagster_instance, KAFKA_SENSOR, ran)
    given_up = sensor.tick()
    assert not given_up.run_requests and f"{MAX_ATTEMPTS} runs for them failed" in given_up.skip_message

    store.overwrite(DATE_LOOKUP, reference.date_lookup(spark, dt.date(2023, 1, 1), dt.date(2024, 12, 31)))
    calendar = store.read(DATE_LOOKUP)
    with KafkaReader(kafka) as reader:
        ingest_kafka(store, spark, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
                     lambda records: parsers.parse_kafka_records(records, calendar))
    level = sensor.tick()
    assert not level.run_requests and "lag 0" in level.skip_message
    assert [e.metadata["lag"].value for e in level.asset_events if isinstance(e, AssetObservation)
            and e.asset_key == AssetKey(["kafka", "bpm"])] == [0]

    dagster_instance.report_runless_asset_event(AssetMaterialization(CALENDAR))
    _produce(broker, 4, start=10)
    (later,) = sensor.tick().run_requests
    assert later.run_key != request.run_key
    assert set(later.asset_selection) == BRONZE_KAFKA  # the calendar's table exists now

    with MockKafkaBroker(port=0, partitions=2) as restarted:  # a broker restarted empty: offsets from 0
        _produce(restarted.bootstrap_servers, 2)
        defs = build_definitions(settings, kafka=KafkaSettings(bootstrap_servers=restarted.bootstrap_servers),
                                 automation=AutomationSettings())
        tick = Sensor(defs, KAFKA_SENSOR, dagster_instance).tick()
    assert not tick.run_requests and "fewer records than bronze already read (bpm/0 ends at offset 1" in tick.skip_message


def test_a_first_tick_counts_as_new_only_the_files_bronze_has_not_read(settings, dagster_instance, run, tmp_path):
    """A sensor's first tick (a new instance, a cursor reset) lists every file of a folder: the
    landing source's materialization counts as new only those bronze has not taken in."""
    landing = tmp_path / "landing"
    _write(landing, "registered_users", "batch-0001.csv")
    _write(landing, "registered_users", "batch-0002.csv")
    run("bronze/registered_users_bz")
    _write(landing, "registered_users", "batch-0003.csv")
    defs = build_definitions(settings, kafka=KafkaSettings(), automation=AutomationSettings())
    tick = Sensor(defs, LANDING_SENSOR, dagster_instance).tick()
    (arrived,) = [e for e in tick.asset_events if e.asset_key == AssetKey(["landing", "registered_users"])]
    assert (arrived.metadata["files"].value, arrived.metadata["new_files"].value) == (3, 1)


def _succeeded(instance, sensor_name: str, request) -> None:
    """The run the daemon made of ``request``, succeeded."""
    instance.add_run(DagsterRun(job_name="__ASSET_JOB", status=DagsterRunStatus.SUCCESS,
                                tags={"dagster/sensor_name": sensor_name, "dagster/run_key": request.run_key}))


def test_files_a_run_left_at_its_cap_are_asked_for_again_until_none_is_left(settings, dagster_instance, store, spark,
                                                                            tmp_path):
    """A run stops at FITNESS_MAX_BATCHES_PER_RUN batches: the listing does not change again, so
    the sensor follows a run that succeeded and took files in with another, until bronze has
    them all; a run that took nothing in is not followed (no loop)."""
    from fitness_assets.pipelines.bronze import ingest
    from fitness_assets.tables import REGISTERED_USERS_BZ, REGISTERED_USERS_QR

    landing = tmp_path / "landing"
    for n in range(5):
        _write(landing, "registered_users", f"batch-{n:04d}.csv",
               f"user_id,device_id,mac_address,registration_timestamp\n{n},{n},aa:bb:cc:dd:ee:0{n},1700000000\n")
    defs = build_definitions(settings, kafka=KafkaSettings(), automation=AutomationSettings())
    sensor = Sensor(defs, LANDING_SENSOR, dagster_instance)

    def capped_run(request):  # what the daemon's run does, two files at most
        ingest(store, spark, str(landing), "registered_users", REGISTERED_USERS_BZ, REGISTERED_USERS_QR,
               parsers.parse_registered_users, max_files_per_batch=1, max_batches=2)
        _succeeded(dagster_instance, LANDING_SENSOR, request)

    (request,) = sensor.tick().run_requests
    keys = [request.run_key]
    while True:
        capped_run(request)
        tick = sensor.tick()
        if not tick.run_requests:
            break
        (request,) = tick.run_requests
        assert ":more-" in request.run_key and set(request.asset_selection) == BRONZE_USERS
        keys.append(request.run_key)
    assert len(keys) == 3 and len(set(keys)) == 3 and store.row_count(REGISTERED_USERS_BZ) == 5
    assert "no new or changed files" in tick.skip_message

    # A run that took nothing in (a file it cannot take; here: no run at all) is not followed.
    _write(landing, "registered_users", "batch-0009.csv", "user_id,device_id,mac_address,registration_timestamp\n")
    (request,) = sensor.tick().run_requests
    _succeeded(dagster_instance, LANDING_SENSOR, request)
    idle = sensor.tick()
    assert not idle.run_requests and "no new or changed files" in idle.skip_message


def test_records_a_run_left_at_its_cap_are_asked_for_again_until_bronze_is_level(settings, dagster_instance, broker,
                                                                                  store, spark):
    kafka = KafkaSettings(bootstrap_servers=broker)
    defs = build_definitions(settings, kafka=kafka, automation=AutomationSettings())
    sensor = Sensor(defs, KAFKA_SENSOR, dagster_instance)
    store.overwrite(DATE_LOOKUP, reference.date_lookup(spark, dt.date(2023, 1, 1), dt.date(2024, 12, 31)))
    _produce(broker, 10)
    (request,) = sensor.tick().run_requests
    keys = [request.run_key]
    for _ in range(10):
        with KafkaReader(kafka) as reader:  # what the daemon's run does, 4 records at most
            ingest_kafka(store, spark, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR, max_records_per_batch=4,
                         max_batches=1)
        _succeeded(dagster_instance, KAFKA_SENSOR, request)
        tick = sensor.tick()
        if not tick.run_requests:
            break
        (request,) = tick.run_requests
        assert ":from-" in request.run_key
        keys.append(request.run_key)
    assert len(set(keys)) == 3 and store.row_count(KAFKA_MULTIPLEX_BZ) == 10 and "lag 0" in tick.skip_message

    _produce(broker, 3, start=10)
    (request,) = sensor.tick().run_requests
    _succeeded(dagster_instance, KAFKA_SENSOR, request)  # and read nothing: not asked again
    idle = sensor.tick()
    assert not idle.run_requests and "already requested and took in nothing more" in idle.skip_message
