"""Sensors on the sources: they start bronze ingestion when data arrives and record, on the
source assets, that it arrived (materializations) and how far behind Kafka ingestion is
(observations with the lag per partition).

Each sensor keeps a cursor of the source position it has acted on, derives its ``run_key``
from that position (so a position is never requested twice) and says why a tick did nothing.
"""

from __future__ import annotations

import hashlib
import json
import os

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterRunStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from fitness_assets.assets.common import asset_key
from fitness_assets.assets.sources import kafka_topic_key, landing_key
from fitness_assets.instance import AUTOMATION_RUN_RETRIES, fail_dead_runs
from fitness_assets.lakehouse.store import DeltaRsTableStore, TableStore
from fitness_assets.pipelines.bronze import ingested_files, list_landing
from fitness_assets.pipelines.bronze_kafka import stored_positions
from fitness_assets.resources import KafkaResource, LakehouseResource, SparkResource
from fitness_assets.settings import AutomationSettings
from fitness_assets.streaming.source import PositionsAhead, check_positions, split_key
from fitness_assets.tables import (
    DATE_LOOKUP,
    GYM_LOGINS_BZ,
    GYM_LOGINS_QR,
    KAFKA_MULTIPLEX_BZ,
    KAFKA_MULTIPLEX_QR,
    REGISTERED_USERS_BZ,
    REGISTERED_USERS_QR,
)

LANDING_SENSOR = "landing_files_sensor"
KAFKA_SENSOR = "kafka_sensor"
AUTOMATION_SENSOR = "table_automation_sensor"

LANDING_TARGETS = {
    "registered_users": (REGISTERED_USERS_BZ, REGISTERED_USERS_QR),
    "gym_logins": (GYM_LOGINS_BZ, GYM_LOGINS_QR),
    "kafka_multiplex": (KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR),
}
KAFKA_TARGET = (KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR)


def _digest(position: dict) -> str:
    return hashlib.sha256(json.dumps(position, sort_keys=True).encode()).hexdigest()[:16]


def _with_calendar(context: SensorEvaluationContext, store: TableStore, keys: list[AssetKey]) -> list[AssetKey]:
    """The multiplex needs date_lookup: while the instance has no materialization of it, or
    its table does not exist (a fresh lakehouse under an old instance; asked of delta-rs only,
    which reads the Delta log without Spark: a sensor does not start a Databricks session), it
    is made in the same run."""
    calendar = asset_key(DATE_LOOKUP)
    if asset_key(KAFKA_MULTIPLEX_BZ) not in keys:
        return keys
    missing = context.instance.get_latest_materialization_event(calendar) is None
    if not missing and isinstance(store, DeltaRsTableStore):
        missing = not store.exists(DATE_LOOKUP)
    return [calendar, *keys] if missing else keys


IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED]


def _in_flight(context: SensorEvaluationContext) -> int:
    """Runs this sensor requested that have not finished: each takes in everything that had
    arrived when it started, so another request now would only queue a duplicate."""
    fail_dead_runs(context.instance)  # a killed run would otherwise hold the sensor back forever
    runs = context.instance.get_run_records(
        filters=RunsFilter(statuses=IN_FLIGHT, tags={"dagster/sensor_name": context.sensor_name}), limit=5)
    return len(runs)


MAX_ATTEMPTS = 3  # runs requested for one source position when the earlier ones failed


def _last_run_status(context: SensorEvaluationContext, cursor: dict) -> DagsterRunStatus | None:
    """The status of the run last requested (its run key in the cursor); None when there is none."""
    if not cursor.get("run_key"):
        return None
    records = context.instance.get_run_records(filters=RunsFilter(tags={
        "dagster/sensor_name": context.sensor_name, "dagster/run_key": cursor["run_key"]}), limit=1)
    return records[0].dagster_run.status if records else None


def _attempt_after_failure(context: SensorEvaluationContext, cursor: dict) -> tuple[bool, int | None]:
    """Whether the run last requested (its run key in the cursor), for the position the sensor
    still sees, failed or was cancelled (a killed worker, a broker gone for a moment), and the
    number of the attempt to request now: None when it succeeded, is not there, or MAX_ATTEMPTS
    failed (then the next position, or a person, takes over). A run key is requested once, so
    each attempt has its own."""
    if _last_run_status(context, cursor) not in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        return False, None
    attempt = int(cursor.get("attempt", 1)) + 1
    return True, (attempt if attempt <= MAX_ATTEMPTS else None)


def _listing(files) -> str:
    """What a landing folder holds: names, sizes and times (a file rewritten in place counts)."""
    return _digest([[f.relative, f.size, f.mtime_ns] for f in files])


def landing_files_step(context: SensorEvaluationContext, landing_root: str,
                       store: TableStore) -> SensorResult | SkipReason:
    """One tick of the landing sensor: a folder whose listing changed since the run last
    requested (a new file, whatever its name sorts as; a file rewritten in place) -> one run of
    the bronze assets of those folders, which take in every file they have not ingested."""
    if _in_flight(context):
        return SkipReason("a run this sensor requested is still queued or running; new files wait for the next tick")
    if not os.path.isdir(landing_root):
        return SkipReason(f"the landing root {landing_root} does not exist: nothing has been delivered yet, or "
                          "FITNESS_LANDING_ROOT names the wrong folder")
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen = cursor.get("listings", {})  # source -> [digest of its listing, number of files]
    changed: dict[str, list] = {}
    listed: dict[str, list] = {}
    for source in LANDING_TARGETS:
        files = listed[source] = list_landing(landing_root, source)
        listing = [_listing(files), len(files)]
        if files and listing[0] != (seen.get(source) or [None])[0]:
            changed[source] = listing
    if not changed:
        failed, attempt = _attempt_after_failure(context, cursor)
        if attempt is None:
            more = None if failed else _files_left(context, cursor, store, listed)
            if more is not None:  # the last run succeeded, took files in and left some (its cap)
                return _request(context, store, cursor | {"requested": sorted(more)}, seen,
                                f"landing:{_digest(seen)}:more-{_digest(_bronze_versions(store))}", 1)
            return SkipReason(f"no new or changed files in {landing_root}" + (" since the last request" if seen else "")
                              + (f" ({MAX_ATTEMPTS} runs for them failed: the next file, or a run by hand, takes them "
                                 "in)" if failed else ""))
        return _request(context, store, cursor, seen, f"landing:{_digest(seen)}:attempt-{attempt}", attempt)
    listings = seen | changed
    requested = set(changed)
    if cursor.get("requested") and _attempt_after_failure(context, cursor)[0]:
        requested |= set(cursor["requested"])  # the folders of a failed run are not forgotten
    return _request(context, store, {"requested": sorted(requested)}, listings, "landing:" + _digest(listings), 1,
                    asset_events=[AssetMaterialization(
                        landing_key(source), description="new or changed landing files",
                        metadata={"files": n, "new_files": _new_files(store, source, listed[source],
                                                                      n - (seen.get(source) or [0, 0])[1])})
                        for source, (_, n) in changed.items()])


def _bronze_versions(store: TableStore) -> dict[str, int]:
    """The landing folders' bronze tables' versions, where the Delta log is read without Spark
    (delta-rs; a sensor starts no Databricks session); empty otherwise."""
    if not isinstance(store, DeltaRsTableStore):
        return {}
    return {source: store.version(bronze) for source, (bronze, _) in LANDING_TARGETS.items()}


def _files_left(context: SensorEvaluationContext, cursor: dict, store: TableStore,
                listed: dict[str, list]) -> set[str] | None:
    """The folders whose files bronze has not all taken in, after the last run succeeded and
    took some in (its bronze version moved): a run stops at FITNESS_MAX_BATCHES_PER_RUN batches
    of files, and the listing does not change again to ask for the rest. None when there is
    nothing to follow up, or the last run took nothing in (asking again would loop)."""
    before = cursor.get("versions") or {}
    now = _bronze_versions(store)
    moved = [source for source in cursor.get("requested", []) if source in now and now[source] != before.get(source)]
    if not moved or _last_run_status(context, cursor) != DagsterRunStatus.SUCCESS:
        return None
    left = {source for source in moved if _new_files(store, source, listed[source], 0)}
    return left or None


def _request(context: SensorEvaluationContext, store: TableStore, cursor: dict, listings: dict, run_key: str,
             attempt: int, asset_events: list | None = None) -> SensorResult:
    """One run of the bronze assets of the cursor's ``requested`` folders, keyed ``run_key``;
    the cursor records it with the bronze versions it starts from."""
    keys = [asset_key(spec) for source in cursor["requested"] for spec in LANDING_TARGETS[source]]
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, asset_selection=_with_calendar(context, store, keys),
                                 tags={"fitness/trigger": "landing_files", "fitness/attempt": str(attempt)})],
        cursor=json.dumps({"listings": listings, "requested": cursor["requested"], "attempt": attempt,
                           "run_key": run_key, "versions": _bronze_versions(store)}, sort_keys=True),
        asset_events=asset_events or [],
    )


def _new_files(store: TableStore, source: str, files: list, listed_since: int) -> int:
    """Of ``files`` (``source``'s listing), those bronze has not taken in: from bronze's commits where the Delta
    log is read without Spark (delta-rs; a sensor starts no Databricks session), otherwise the
    files listed since the last request (on a first tick that is every file, read or not)."""
    bronze = LANDING_TARGETS[source][0]
    if isinstance(store, DeltaRsTableStore) and store.exists(bronze):
        ingested = ingested_files(store, bronze)
        return sum(f.relative not in ingested for f in files)
    return max(0, listed_since)


def kafka_step(context: SensorEvaluationContext, kafka: KafkaResource, lakehouse: LakehouseResource,
               spark: SparkResource) -> SensorResult | SkipReason:
    """One tick of the Kafka sensor: end offsets moved and bronze lags behind them -> one run
    of the multiplex bronze asset, keyed by the end offsets."""
    if not kafka.enabled:
        return SkipReason("Kafka is off: FITNESS_KAFKA_BOOTSTRAP_SERVERS is not set")
    if _in_flight(context):
        return SkipReason("a run this sensor requested is still queued or running; new records wait for the next tick")
    positions, _ = stored_positions(lakehouse.store(), KAFKA_MULTIPLEX_BZ)  # reads the Delta log only
    with kafka.reader() as reader:
        marks = reader.watermarks()
    if not marks:
        return SkipReason(f"none of the topics {', '.join(kafka.topics)} exists on {kafka.bootstrap_servers} yet")
    try:
        check_positions(positions, marks)
    except PositionsAhead as ahead:  # the ingestion would stop on it: say why here, instead of a lag of 0
        return SkipReason(str(ahead))
    ends = {key: high for key, (_, high) in marks.items()}
    lag = {key: max(0, high - max(positions.get(key, low), low)) for key, (low, high) in marks.items()}
    cursor = json.loads(context.cursor) if context.cursor else {}
    events: list[AssetMaterialization | AssetObservation] = []
    for topic in kafka.topics:
        mine = {k: v for k, v in ends.items() if split_key(k)[0] == topic}
        seen = {k: v for k, v in cursor.get("ends", {}).items() if split_key(k)[0] == topic}
        if mine and mine != seen:
            arrived = sum(v - seen.get(k, 0) for k, v in mine.items())
            events.append(AssetMaterialization(kafka_topic_key(topic), description="new records on the topic",
                                               metadata={"new_records": arrived,
                                                         "end_offsets": MetadataValue.json(mine)}))
        topic_lag = {k: v for k, v in lag.items() if split_key(k)[0] == topic}
        if topic_lag != {k: v for k, v in cursor.get("lag", {}).items() if split_key(k)[0] == topic}:
            events.append(AssetObservation(kafka_topic_key(topic), metadata={
                "lag": sum(topic_lag.values()), "lag_by_partition": MetadataValue.json(topic_lag)}))
    total = sum(lag.values())
    new_cursor = json.dumps({**cursor, "ends": ends, "lag": lag}, sort_keys=True)
    if total == 0:
        return SensorResult(skip_reason=SkipReason("bronze is level with Kafka: lag 0 on every partition"),
                            cursor=new_cursor, asset_events=events)
    attempt: int | None = 1
    suffix = ""
    if ends == cursor.get("requested"):
        failed, attempt = _attempt_after_failure(context, cursor)
        if attempt is not None:
            suffix = f":attempt-{attempt}"
        elif (not failed and positions != cursor.get("positions")
              and _last_run_status(context, cursor) == DagsterRunStatus.SUCCESS):
            # The run succeeded and read records, but stopped at its cap with records left
            # (FITNESS_KAFKA_MAX_BATCHES_PER_RUN): the rest, from where it stopped.
            attempt, suffix = 1, f":from-{_digest(positions)}"
        else:
            return SensorResult(skip_reason=SkipReason(
                f"lag {total}, but a run for these end offsets was already requested"
                + (f" ({MAX_ATTEMPTS} runs for them failed: new records, or a run by hand, take them in)"
                   if failed else " and took in nothing more")),
                cursor=new_cursor, asset_events=events)
    keys = [asset_key(spec) for spec in KAFKA_TARGET]
    run_key = "kafka:" + _digest(ends) + suffix
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, asset_selection=_with_calendar(context, lakehouse.store(), keys),
                                 tags={"fitness/trigger": "kafka", "fitness/kafka_lag": str(total),
                                       "fitness/attempt": str(attempt)})],
        cursor=json.dumps({"ends": ends, "lag": lag, "requested": ends, "attempt": attempt, "run_key": run_key,
                           "positions": positions}, sort_keys=True),
        asset_events=events,
    )


def build_sensors(settings: AutomationSettings) -> list[SensorDefinition]:
    status = DefaultSensorStatus.RUNNING if settings.running else DefaultSensorStatus.STOPPED
    interval = settings.microbatch_seconds

    @sensor(name=LANDING_SENSOR, minimum_interval_seconds=interval, default_status=status,
            asset_selection=AssetSelection.assets(*[asset_key(s) for t in LANDING_TARGETS.values() for s in t],
                                                  asset_key(DATE_LOOKUP)),
            description="New files in the landing folders start their bronze ingestion.")
    def landing_files_sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource):
        return landing_files_step(context, lakehouse.landing_root, lakehouse.store())

    @sensor(name=KAFKA_SENSOR, minimum_interval_seconds=interval, default_status=status,
            asset_selection=AssetSelection.assets(*[asset_key(s) for s in KAFKA_TARGET], asset_key(DATE_LOOKUP)),
            description="New records on the Kafka topics start the multiplex's bronze ingestion; the lag per "
                        "partition is recorded on the topics' source assets.")
    def kafka_sensor(context: SensorEvaluationContext, kafka: KafkaResource, lakehouse: LakehouseResource,
                     spark: SparkResource):
        return kafka_step(context, kafka, lakehouse, spark)

    automation = AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR, target=AssetSelection.all(), default_status=status, minimum_interval_seconds=interval,
        run_tags={"dagster/max_retries": str(AUTOMATION_RUN_RETRIES)},
        description="Evaluates the tables' automation conditions: silver and gold refresh when upstream data "
                    f"changed; any table catches up when it fails its freshness policy. A failed run is run again "
                    f"from its failure, up to {AUTOMATION_RUN_RETRIES} times.",
    )
    return [landing_files_sensor, kafka_sensor, automation]
