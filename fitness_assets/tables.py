"""Every table of the lakehouse: its layer, explicit schema, key, partitioning and constraints.

This module is the single place where table shapes live. Bronze never infers a schema, the
table store creates tables from these specs, and Dagster assets take their keys, column
schemas and descriptions from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

LONG = pa.int64()
INT = pa.int32()
DOUBLE = pa.float64()
STRING = pa.string()
BOOL = pa.bool_()
DATE = pa.date32()
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """A Delta table: where it lives, what it holds and which rows are the same row."""

    layer: str
    name: str
    columns: tuple[tuple[str, pa.DataType], ...]
    description: str
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    constraints: dict[str, str] = field(default_factory=dict)
    not_null: tuple[str, ...] = ()
    change_data_feed: bool = True
    properties: dict[str, str] = field(default_factory=dict)
    # Columns holding personal data: never copied into check samples or logs.
    personal: tuple[str, ...] = ()
    # Rows are written sorted by this column, in small row groups, so that a read of a range of
    # it (``TableStore.read(within=...)``) skips the files and row groups outside the range: the
    # tables that grow with time, read by time in a micro-batch.
    cluster_by: str | None = None

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(name, dtype, nullable=name not in self.not_null) for name, dtype in self.columns]
        )

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def asset_key_path(self) -> list[str]:
        return [self.layer, self.name]


def _cols(*pairs: tuple[str, pa.DataType]) -> tuple[tuple[str, pa.DataType], ...]:
    return tuple(pairs)


BRONZE_AUDIT = _cols(("load_time", TIMESTAMP), ("source_file", STRING))
# Bronze commits carry the list of landing files they ingested (pipelines.bronze); the log
# must keep them for as long as the files may be seen again, not the default 30 days.
INGEST_LOG_PROPERTIES = {"delta.logRetentionDuration": "interval 36500 days",
                         "delta.enableExpiredLogCleanup": "false"}
# Tables clustered by time (``cluster_by``) are written in files of about 8 MiB (~1M heart-rate
# readings) instead of one file per write: sorted rows make each file a stretch of time, so a
# MERGE or a read of a few hours opens the one or two files of that stretch, whatever the
# table's size. Measured at 5M readings: a micro-batch's MERGE into `heart_rate` with two late
# readings scanned its single 34 MB file (0.4 s); against 8 MiB files, only the ~1M-row file
# of their stretch of time (0.1 s). delta-rs and Databricks both size new files by this property.
CLUSTERED_PROPERTIES = {"delta.targetFileSize": str(8 * 1024 * 1024)}

DATE_LOOKUP = TableSpec(
    layer="reference",
    name="date_lookup",
    columns=_cols(
        ("date", DATE), ("week", INT), ("year", INT), ("month", INT), ("dayofweek", INT),
        ("dayofmonth", INT), ("dayofyear", INT), ("week_part", STRING),
    ),
    description="Calendar of every day in the configured range with the original's week rules "
    "(Sunday-first weeks, strftime %U) and the `{year}-{week}` week_part.",
    keys=("date",),
    not_null=("date", "week", "year", "week_part"),
    change_data_feed=False,
)

REGISTERED_USERS_BZ = TableSpec(
    layer="bronze",
    name="registered_users_bz",
    columns=_cols(
        ("user_id", LONG), ("device_id", LONG), ("mac_address", STRING),
        ("registration_timestamp", DOUBLE), *BRONZE_AUDIT,
    ),
    description="Member registrations from the portal's daily CSV files, as received.",
    not_null=("user_id", "device_id", "mac_address", "registration_timestamp", "source_file"),
    change_data_feed=False,
    properties=INGEST_LOG_PROPERTIES,
)

GYM_LOGINS_BZ = TableSpec(
    layer="bronze",
    name="gym_logins_bz",
    columns=_cols(
        ("mac_address", STRING), ("gym", LONG), ("login", DOUBLE), ("logout", DOUBLE), *BRONZE_AUDIT,
    ),
    description="Badge-in/badge-out events of gym doors (CSV), as received; logout is empty "
    "while the member is still inside.",
    not_null=("mac_address", "gym", "login", "source_file"),
    change_data_feed=False,
    properties=INGEST_LOG_PROPERTIES,
)

KAFKA_TOPICS = ("user_info", "workout", "bpm")
# The fields of a multiplex record (a landing line or a Kafka message).
KAFKA_FIELDS = ("key", "value", "topic", "partition", "offset", "timestamp")

KAFKA_MULTIPLEX_BZ = TableSpec(
    layer="bronze",
    name="kafka_multiplex_bz",
    columns=_cols(
        ("key", STRING), ("value", STRING), ("topic", STRING), ("partition", LONG), ("offset", LONG),
        ("timestamp", LONG), ("date", DATE), ("week_part", STRING), *BRONZE_AUDIT,
    ),
    description="The Kafka multiplex of profile CDC (`user_info`), workout start/stop "
    "(`workout`) and heart-rate (`bpm`) records, as received; timestamp in epoch ms.",
    partition_by=("topic",),
    not_null=("value", "topic", "partition", "offset", "timestamp", "source_file"),
    personal=("key", "value"),
    constraints={"topic_accepted": "topic IN ('user_info', 'workout', 'bpm')"},
    change_data_feed=False,
    properties=INGEST_LOG_PROPERTIES,
)

QUARANTINE_COLUMNS = _cols(
    ("source_file", STRING), ("line", LONG), ("raw", STRING), ("reason", STRING), ("load_time", TIMESTAMP),
)


def quarantine_for(bronze: TableSpec) -> TableSpec:
    """The quarantine table beside a bronze table: rejected lines with their reason."""
    return TableSpec(
        layer="quarantine",
        name=bronze.name,
        columns=QUARANTINE_COLUMNS,
        description=f"What `{bronze.name}` rejected, with the reason: lines of its landing files"
        + (" and records read from Kafka (`source_file` kafka://<topic>/<partition>, `line` the offset)"
           if bronze.name == "kafka_multiplex_bz" else "")
        + "; `line` 0 is a file refused whole, -1 a file that changed after it was ingested.",
        keys=("source_file", "line"),
        not_null=("source_file", "line", "reason"),
        change_data_feed=False,
        personal=("raw",),
    )


REGISTERED_USERS_QR = quarantine_for(REGISTERED_USERS_BZ)
GYM_LOGINS_QR = quarantine_for(GYM_LOGINS_BZ)
KAFKA_MULTIPLEX_QR = quarantine_for(KAFKA_MULTIPLEX_BZ)

# What a member's delete erases (names, address, date of birth).
ERASED_ON_DELETE = ("dob", "first_name", "last_name", "street_address", "city", "state", "zip")
PERSONAL_FIELDS = ("dob", "sex", "gender", "first_name", "last_name", "street_address", "city", "state", "zip")

PROFILE_COLUMNS = _cols(
    ("user_id", LONG), ("dob", DATE), ("sex", STRING), ("gender", STRING), ("first_name", STRING),
    ("last_name", STRING), ("street_address", STRING), ("city", STRING), ("state", STRING),
    ("zip", INT), ("updated", TIMESTAMP),
)

USERS = TableSpec(
    layer="silver",
    name="users",
    columns=_cols(("user_id", LONG), ("device_id", LONG), ("mac_address", STRING), ("registration_timestamp", TIMESTAMP)),
    description="Registered members with their device and badge MAC; the first registration wins.",
    keys=("user_id",),
    not_null=("user_id", "device_id", "mac_address", "registration_timestamp"),
)

GYM_LOGS = TableSpec(
    layer="silver",
    name="gym_logs",
    columns=_cols(("mac_address", STRING), ("gym", LONG), ("login", TIMESTAMP), ("logout", TIMESTAMP)),
    description="Gym visits, one per badge-in; the logout is filled in when it arrives later.",
    keys=("mac_address", "gym", "login"),
    not_null=("mac_address", "gym", "login"),
)

USER_PROFILE = TableSpec(
    layer="silver",
    name="user_profile",
    columns=PROFILE_COLUMNS,
    description="Current member profiles from the CDC stream (SCD type 1): the latest change "
    "wins whatever order changes arrive in; a latest delete removes the member.",
    keys=("user_id",),
    not_null=("user_id", "updated"),
    personal=PERSONAL_FIELDS,
)

USER_PROFILE_HISTORY = TableSpec(
    layer="silver",
    name="user_profile_history",
    columns=_cols(
        *PROFILE_COLUMNS, ("valid_from", TIMESTAMP), ("valid_to", TIMESTAMP), ("is_current", BOOL),
        ("is_deleted", BOOL),
    ),
    description="Every version of every member profile (SCD type 2), deletes included.",
    keys=("user_id", "valid_from"),
    not_null=("user_id", "valid_from", "is_current", "is_deleted"),
    personal=PERSONAL_FIELDS,
    constraints={"valid_interval": "valid_to IS NULL OR valid_to > valid_from"},
)

WORKOUTS = TableSpec(
    layer="silver",
    name="workouts",
    columns=_cols(("user_id", LONG), ("workout_id", INT), ("time", TIMESTAMP), ("action", STRING), ("session_id", INT)),
    description="Workout start and stop events, each event kept once.",
    keys=("user_id", "workout_id", "session_id", "action"),
    not_null=("user_id", "workout_id", "time", "action", "session_id"),
    constraints={"action_accepted": "action IN ('start', 'stop')"},
)

HEART_RATE = TableSpec(
    layer="silver",
    name="heart_rate",
    columns=_cols(("device_id", LONG), ("time", TIMESTAMP), ("heartrate", DOUBLE), ("valid", BOOL)),
    description="Heart-rate readings of wearable devices, one per device and instant; `valid` "
    "when the heart rate is present and positive.",
    keys=("device_id", "time"),
    not_null=("device_id", "time", "valid"),
    cluster_by="time",
    properties=CLUSTERED_PROPERTIES,
)

USER_BINS = TableSpec(
    layer="silver",
    name="user_bins",
    columns=_cols(("user_id", LONG), ("age", STRING), ("gender", STRING), ("city", STRING), ("state", STRING)),
    description="Demographic bins of current members (age bin at the reference date, gender, city, state).",
    keys=("user_id",),
    not_null=("user_id", "age"),
)

COMPLETED_WORKOUTS = TableSpec(
    layer="silver",
    name="completed_workouts",
    columns=_cols(
        ("user_id", LONG), ("workout_id", INT), ("session_id", INT), ("start_time", TIMESTAMP), ("end_time", TIMESTAMP),
    ),
    description="Workouts with both a start and a stop, the stop within three hours of the start.",
    keys=("user_id", "workout_id", "session_id"),
    not_null=("user_id", "workout_id", "session_id", "start_time", "end_time"),
)

WORKOUT_BPM = TableSpec(
    layer="silver",
    name="workout_bpm",
    columns=_cols(
        ("user_id", LONG), ("workout_id", INT), ("session_id", INT), ("start_time", TIMESTAMP),
        ("end_time", TIMESTAMP), ("time", TIMESTAMP), ("heartrate", DOUBLE),
    ),
    description="Valid heart-rate readings of a member's device taken during a completed workout.",
    keys=("user_id", "workout_id", "session_id", "time"),
    not_null=("user_id", "workout_id", "session_id", "start_time", "end_time", "time"),
    cluster_by="start_time",
    properties=CLUSTERED_PROPERTIES,
)

WORKOUT_BPM_SUMMARY = TableSpec(
    layer="gold",
    name="workout_bpm_summary",
    columns=_cols(
        ("workout_id", INT), ("session_id", INT), ("user_id", LONG), ("age", STRING), ("gender", STRING),
        ("city", STRING), ("state", STRING), ("min_bpm", DOUBLE), ("avg_bpm", DOUBLE), ("max_bpm", DOUBLE),
        ("num_recordings", LONG),
    ),
    description="Per completed workout: minimum, average and maximum heart rate and the member's demographics.",
    keys=("user_id", "workout_id", "session_id"),
    not_null=("workout_id", "session_id", "user_id", "num_recordings"),
)

GYM_SUMMARY = TableSpec(
    layer="gold",
    name="gym_summary",
    columns=_cols(
        ("date", DATE), ("gym", LONG), ("mac_address", STRING), ("workout_id", INT), ("session_id", INT),
        ("minutes_in_gym", DOUBLE), ("minutes_exercising", DOUBLE),
    ),
    description="Gym visits with the workouts done during them: minutes in the gym and minutes exercising.",
    keys=("mac_address", "gym", "date", "workout_id", "session_id"),
    not_null=("date", "gym", "mac_address", "workout_id", "session_id"),
)

# --- business gold tables (transforms.business) -------------------------------------------

GYM_OCCUPANCY = TableSpec(
    layer="gold",
    name="gym_occupancy",
    columns=_cols(
        ("gym", LONG), ("date", DATE), ("hour", INT), ("visitors", LONG), ("arrivals", LONG),
        ("unclosed_visits", LONG), ("member_minutes", DOUBLE), ("is_peak_hour", BOOL),
    ),
    description="Members inside each gym per UTC hour and day, from `silver.gym_logs`: a visit counts in "
    "every hour from its login to its logout (a visit without a logout, or with a logout before its login "
    "or more than 24 h after it, counts in its login hour only, as `unclosed_visits`); the peak hour of "
    "each gym and day is the hour with the most visitors, the earliest on a tie.",
    keys=("gym", "date", "hour"),
    not_null=("gym", "date", "hour", "visitors", "arrivals", "unclosed_visits", "member_minutes", "is_peak_hour"),
    constraints={"hour_in_day": "hour >= 0 AND hour <= 23"},
)

MEMBER_ENGAGEMENT = TableSpec(
    layer="gold",
    name="member_engagement",
    columns=_cols(
        ("user_id", LONG), ("reference_date", DATE), ("last_visit", TIMESTAMP), ("last_workout", TIMESTAMP),
        ("visits_7d", LONG), ("visits_30d", LONG), ("workouts_7d", LONG), ("workouts_30d", LONG),
        ("days_inactive", INT), ("workouts_before_lapse", LONG), ("at_risk_after_days", INT), ("at_risk", BOOL),
    ),
    description="Per member (registered, or with a completed workout), as of the reference date "
    "(`FITNESS_REFERENCE_DATE`, events after it ignored): last visit, last workout, visits and workouts in "
    "the last 7 and 30 days, and `at_risk`: a member who trained regularly (at least 4 completed workouts in "
    "the 30 days up to their last activity) and has had no visit or workout for `FITNESS_AT_RISK_DAYS` days "
    "(default 14). A change of the reference date or of the threshold recomputes every member.",
    keys=("user_id",),
    not_null=("user_id", "reference_date", "visits_7d", "visits_30d", "workouts_7d", "workouts_30d",
              "workouts_before_lapse", "at_risk_after_days", "at_risk"),
)

WORKOUT_ZONES = TableSpec(
    layer="gold",
    name="workout_zones",
    columns=_cols(
        ("user_id", LONG), ("workout_id", INT), ("session_id", INT), ("start_time", TIMESTAMP), ("end_time", TIMESTAMP),
        ("readings", LONG), ("heartrate_sum", pa.decimal128(28, 6)), ("max_bpm", DOUBLE),
        ("zone1_micros", LONG), ("zone2_micros", LONG), ("zone3_micros", LONG), ("zone4_micros", LONG),
        ("zone5_micros", LONG),
    ),
    description="Per completed workout with readings (`silver.workout_bpm`): its readings, their exact sum "
    "(6 decimals) and peak, and the microseconds spent in each heart-rate zone (zones as in "
    "`workout_performance`; NULL while the member has no usable date of birth). The per-workout totals "
    "`workout_performance` adds up per week, kept so that new readings recompute only their own workouts.",
    keys=("user_id", "workout_id", "session_id"),
    not_null=("user_id", "workout_id", "session_id", "start_time", "end_time", "readings", "heartrate_sum",
              "max_bpm"),
)

WORKOUT_PERFORMANCE = TableSpec(
    layer="gold",
    name="workout_performance",
    columns=_cols(
        ("user_id", LONG), ("year", INT), ("week", INT), ("week_part", STRING), ("week_start", DATE),
        ("workouts", LONG), ("minutes_exercising", DOUBLE), ("workouts_with_readings", LONG), ("readings", LONG),
        ("avg_bpm", DOUBLE), ("max_bpm", DOUBLE), ("zone1_minutes", DOUBLE), ("zone2_minutes", DOUBLE),
        ("zone3_minutes", DOUBLE), ("zone4_minutes", DOUBLE), ("zone5_minutes", DOUBLE),
    ),
    description="Per member and week (the calendar's Sunday-first `%U` weeks of the workout's UTC start "
    "date): completed workouts, minutes exercising, average and peak heart rate, and minutes in heart-rate "
    "zones. Zones use max HR = 220 - age (whole years at the workout's date, from the current profile's "
    "`dob`): zone k (1-5) holds readings at or above 40 + 10k % of max HR and below the next zone; each "
    "reading stands for the time since the workout's previous reading (its start for the first).",
    keys=("user_id", "year", "week"),
    not_null=("user_id", "year", "week", "week_part", "week_start", "workouts", "minutes_exercising",
              "workouts_with_readings", "readings"),
)

BRONZE_TABLES = (REGISTERED_USERS_BZ, GYM_LOGINS_BZ, KAFKA_MULTIPLEX_BZ)
QUARANTINE_TABLES = (REGISTERED_USERS_QR, GYM_LOGINS_QR, KAFKA_MULTIPLEX_QR)
SILVER_TABLES = (
    USERS, GYM_LOGS, USER_PROFILE_HISTORY, USER_PROFILE, WORKOUTS, HEART_RATE, USER_BINS,
    COMPLETED_WORKOUTS, WORKOUT_BPM,
)
GOLD_TABLES = (WORKOUT_BPM_SUMMARY, GYM_SUMMARY, GYM_OCCUPANCY, MEMBER_ENGAGEMENT, WORKOUT_ZONES,
               WORKOUT_PERFORMANCE)
ALL_TABLES = (DATE_LOOKUP, *BRONZE_TABLES, *QUARANTINE_TABLES, *SILVER_TABLES, *GOLD_TABLES)
