"""Silver transforms: typed, deduplicated business entities.

Functions here are pure: DataFrames in, DataFrames out. Each ends with a ``select`` that
states its output columns. Rules that must not depend on how input was split into batches
(first registration wins, latest logout wins, ...) are written so that applying them to any
split and combining the results gives what applying them once to all input gives.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fitness_assets.tables import ERASED_ON_DELETE, KAFKA_FIELDS
from fitness_assets.transforms import parsing as P
from fitness_assets.transforms.bronze import PAYLOAD_FIELDS, _from_json, decode_kafka, decode_payloads

MAX_WORKOUT_HOURS = 3
AGE_BINS = ((18, "under 18"), (25, "18-25"), (35, "25-35"), (45, "35-45"), (55, "45-55"), (65, "55-65"),
            (75, "65-75"), (85, "75-85"), (95, "85-95"))
PROFILE_FIELDS = ("dob", "sex", "gender", "first_name", "last_name", "street_address", "city", "state", "zip")


def first_by(df: DataFrame, keys: list[str], order: list[Column]) -> DataFrame:
    """The first row of each ``keys`` group in ``order``."""
    w = Window.partitionBy(*keys).orderBy(*order)
    return df.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") == 1).drop("_rn")


def users(registrations: DataFrame) -> DataFrame:
    """One row per member: the earliest registration (ties: lowest device, then MAC). Times
    become microsecond timestamps before they are compared, as ``USERS_EARLIER`` compares them
    with the stored row: two registrations less than a microsecond apart tie in both, so the
    member does not depend on whether they arrived in one batch or two."""
    timed = registrations.select(
        "user_id", "device_id", "mac_address",
        P.epoch_seconds_to_timestamp(F.col("registration_timestamp")).alias("registration_timestamp"))
    return first_by(timed, ["user_id"], [F.col("registration_timestamp"), F.col("device_id"), F.col("mac_address")])


# Replace a stored user only with an earlier registration (same order as `users`).
USERS_EARLIER = ("s.registration_timestamp < t.registration_timestamp OR (s.registration_timestamp = "
                 "t.registration_timestamp AND (s.device_id < t.device_id OR (s.device_id = t.device_id "
                 "AND s.mac_address < t.mac_address)))")


def gym_logs(logins: DataFrame) -> DataFrame:
    """One row per visit (mac, gym, login) with the latest logout seen (NULL while inside).
    Times become microsecond timestamps before the visits are grouped: two logins less than a
    microsecond apart are one visit, as the table's key sees them."""
    times = logins.select(
        "mac_address", "gym", P.epoch_seconds_to_timestamp(F.col("login")).alias("login"),
        P.epoch_seconds_to_timestamp(F.col("logout")).alias("logout"),
    )
    return times.groupBy("mac_address", "gym", "login").agg(F.max("logout").alias("logout"))


LOGOUT_LATER = "s.logout IS NOT NULL AND (t.logout IS NULL OR s.logout > t.logout)"


def workouts(kafka: DataFrame) -> DataFrame:
    """Workout events, one per (user, workout, session, action), the earliest time kept."""
    events = decode_kafka(kafka, "workout")
    return events.groupBy(
        "user_id", "workout_id", "session_id", "action"
    ).agg(F.min("updated").alias("time")).select("user_id", "workout_id", "time", "action", "session_id")


def heart_rate(kafka: DataFrame) -> DataFrame:
    """Readings, one per (device, instant): the highest heart rate reported for it. (On
    delta-rs the pipeline decodes most payloads with Arrow, ``transforms.readings_arrow``, and
    applies the same rule there; this is the rule on Spark.)"""
    readings = decode_kafka(kafka, "bpm")
    per_instant = readings.groupBy("device_id", "time").agg(F.max("heartrate").alias("heartrate"))
    return per_instant.select(
        "device_id", "time", "heartrate",
        is_valid_heartrate(F.col("heartrate")).alias("valid"),
    )


def bpm_readings(payloads: DataFrame) -> DataFrame:
    """The readings of `bpm` payloads (a ``value`` column), one per payload, not yet reduced
    to one per instant."""
    return decode_payloads(payloads, "bpm").select("device_id", "time", "heartrate")


def is_valid_heartrate(heartrate: Column) -> Column:
    """A usable reading: present, finite and positive (Spark orders NaN above every number,
    so ``NaN > 0`` alone would call it valid)."""
    return F.coalesce((heartrate > 0) & P.is_finite(heartrate), F.lit(False))


HEARTRATE_HIGHER = "s.heartrate IS NOT NULL AND (t.heartrate IS NULL OR s.heartrate > t.heartrate)"


def profile_changes(kafka: DataFrame) -> DataFrame:
    """Profile CDC changes, one per (user, instant): on a tie the highest (partition, offset)
    wins; records that tie on those too (the same record delivered twice, or two files that
    disagree) go to the later file (names sort in delivery order), then to the greater raw
    value: the same records give the same winner however they were split into batches."""
    changes = decode_payloads(kafka.where(F.col("topic") == "user_info"), "user_info",
                              ("partition", "offset", "source_file", "value"))
    order = [F.col("partition").desc(), F.col("offset").desc(), F.col("source_file").desc(), F.col("value").desc()]
    return first_by(changes, ["user_id", "updated"], order).select(
        "user_id", "update_type", "updated", *PROFILE_FIELDS,
    )


def profile_history(changes: DataFrame) -> DataFrame:
    """SCD type 2 of each member's changes: every version with its validity interval. A
    delete is a version of its own (``is_deleted``) keeping the last known profile values,
    except the personal ones (names, address, date of birth): a delete erases them from that
    version and every earlier one, so the history keeps its versions but not the person. A
    member who comes back after a delete keeps the data of the new versions."""
    by_time = Window.partitionBy("user_id").orderBy("updated")
    last_delete = F.max(F.when(F.col("update_type") == "delete", F.col("updated"))).over(
        Window.partitionBy("user_id"))
    erased = F.coalesce(F.col("updated") <= last_delete, F.lit(False))
    carried = {c: F.when(F.col("update_type") == "delete",
                         F.coalesce(F.col(c), F.last(F.col(c), ignorenulls=True).over(
                             by_time.rowsBetween(Window.unboundedPreceding, -1)))).otherwise(F.col(c))
               for c in PROFILE_FIELDS}
    carried |= {c: F.when(~erased, carried[c]) for c in ERASED_ON_DELETE}
    valid_to = F.lead("updated").over(by_time)
    return changes.select(
        "user_id", *[carried[c].alias(c) for c in PROFILE_FIELDS], "updated",
        F.col("updated").alias("valid_from"), valid_to.alias("valid_to"),
        valid_to.isNull().alias("is_current"), (F.col("update_type") == "delete").alias("is_deleted"),
    ).select("user_id", *PROFILE_FIELDS, "updated", "valid_from", "valid_to", "is_current", "is_deleted")


#: A ``user_id`` named in a raw line, as JSON writes it in a record or escaped inside a value
#: string (``"user_id": 7``, ``\"user_id\":\"7\"``): found in lines that are not one record.
NAMED_USER_ID = r'user_id\\?"\s*:\s*\\?"?([0-9]{1,18})(?![0-9])'


def erased_quarantine_rows(quarantine: DataFrame, members: DataFrame) -> DataFrame:
    """Quarantined `user_info` lines naming one of ``members`` (``user_id``) whose raw line
    still holds their data, with ``raw`` emptied: what a delete must write back there. A line
    is a member's when it parses as a `user_info` record of theirs, or when it names their
    ``user_id`` anywhere (a JSON array of records, a line cut short, other malformed JSON)."""
    record = _from_json(F.col("raw"), KAFKA_FIELDS)
    payload = _from_json(record["value"], PAYLOAD_FIELDS)
    # JSON writes the topic's letters and underscore as themselves or as \u escapes (no other
    # escape is accepted for them), so a line with neither cannot be a `user_info` record and is
    # not parsed: most quarantined lines are readings (5M readings: 76k lines, two JSON parses each).
    # A line cut before its topic is looked at when it holds a personal field's name.
    named = F.col("raw").contains("user_info") | F.col("raw").contains("\\u")
    for field_name in ("first_name", "last_name", "street_address", "dob"):
        named = named | F.col("raw").contains(field_name)
    keys = ["source_file", "line"]
    lines = quarantine.where(F.col("raw").isNotNull() & named).select(
        *keys, record["topic"].alias("_topic"), P.as_long(payload["user_id"]).alias("user_id"),
        F.regexp_extract_all(F.col("raw"), F.lit(NAMED_USER_ID), F.lit(1)).alias("_named"))
    as_record = lines.where(F.col("_topic") == "user_info").select(*keys, "user_id")
    as_text = lines.select(*keys, F.explode("_named").alias("_id")).select(*keys, F.col("_id").cast("long").alias("user_id"))
    hits = as_record.unionByName(as_text).join(
        F.broadcast(members.select("user_id").distinct()), on="user_id", how="left_semi").select(*keys).distinct()
    erased = quarantine.join(hits, on=keys, how="left_semi")
    return erased.select("source_file", "line", F.lit(None).cast("string").alias("raw"), "reason", "load_time")


def current_profiles(history: DataFrame) -> DataFrame:
    """The current version of each member, with ``is_deleted`` telling whether it is a delete."""
    return history.where(F.col("is_current")).select("user_id", *PROFILE_FIELDS, "updated", "is_deleted")


def age_bin(dob: Column, reference: dt.date) -> Column:
    """The contract's age bin of a date of birth at ``reference`` (lower bounds inclusive)."""
    ref = F.lit(reference)
    birthday_to_come = (F.month(ref) < F.month(dob)) | ((F.month(ref) == F.month(dob)) & (F.dayofmonth(ref) < F.dayofmonth(dob)))
    age = F.year(ref) - F.year(dob) - birthday_to_come.cast("int")
    expr = F.when(dob.isNull(), F.lit("invalid age"))
    for upper, label in AGE_BINS:
        expr = expr.when(age < upper, F.lit(label))
    return expr.otherwise(F.lit("95+"))


def user_bins(profiles: DataFrame, reference: dt.date) -> DataFrame:
    return profiles.select("user_id", age_bin(F.col("dob"), reference).alias("age"), "gender", "city", "state")


def completed_workouts(events: DataFrame) -> DataFrame:
    """Start/stop pairs of one workout with the stop after the start and within three hours."""
    pairs = events.groupBy("user_id", "workout_id", "session_id").agg(
        F.min(F.when(F.col("action") == "start", F.col("time"))).alias("start_time"),
        F.min(F.when(F.col("action") == "stop", F.col("time"))).alias("end_time"),
    )
    done = (F.col("start_time") < F.col("end_time")) & (F.col("end_time") <= F.col("start_time") + F.make_dt_interval(hours=F.lit(MAX_WORKOUT_HOURS)))
    return pairs.where(done).select("user_id", "workout_id", "session_id", "start_time", "end_time")


def workout_bpm(completed: DataFrame, members: DataFrame, readings: DataFrame,
                broadcast_workouts: bool = False) -> DataFrame:
    """Valid readings of the member's device taken during a completed workout (one row per
    reading and workout: heart_rate has one reading per device and instant). With
    ``broadcast_workouts`` the workouts are sent whole to every task reading the readings,
    instead of both sides being shuffled by device (Spark's size estimate of a join's output
    never allows the broadcast by itself)."""
    devices = completed.join(members.select("user_id", "device_id"),
                             on="user_id", how="inner")
    if broadcast_workouts:
        devices = F.broadcast(devices)
    valid = readings.where(F.col("valid")).select("device_id", "time", "heartrate")
    joined = devices.join(valid, on=[devices["device_id"] == valid["device_id"],
                                     valid["time"] > devices["start_time"], valid["time"] <= devices["end_time"]],
                          how="inner")
    return joined.select("user_id", "workout_id", "session_id", "start_time", "end_time", valid["time"], "heartrate")
