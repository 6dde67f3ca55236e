"""Landing lines to bronze rows or quarantine rows.

Each parser takes one row per landing line (``source_file``, ``line``, ``raw``) and returns the
bronze columns plus ``reason``: NULL for a good line, else the first problem found, in the
vocabulary ``malformed_csv``, ``malformed_json``, ``malformed_payload``,
``missing_field:<f>``, ``wrong_type:<f>``, ``invalid_value:<f>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fitness_assets.tables import KAFKA_FIELDS, KAFKA_TOPICS
from fitness_assets.transforms import parsing as P

REASON = "reason"

REGISTERED_USERS_HEADER = ("user_id", "device_id", "mac_address", "registration_timestamp")
GYM_LOGINS_HEADER = ("mac_address", "gym", "login", "logout")

PAYLOAD_FIELDS = (
    "user_id", "update_type", "timestamp", "dob", "sex", "gender", "first_name", "last_name", "address",
    "workout_id", "action", "session_id", "device_id", "time", "heartrate",
)
ADDRESS_FIELDS = ("street_address", "city", "state", "zip")
CORRUPT = "_corrupt_record"


def _string_schema(fields: tuple[str, ...], corrupt: bool = True) -> T.StructType:
    schema = T.StructType([T.StructField(f, T.StringType()) for f in fields])
    return schema.add(CORRUPT, T.StringType()) if corrupt else schema


def _from_json(value: Column, fields: tuple[str, ...]) -> Column:
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    return F.from_json(value, _string_schema(fields), options)


@dataclass(frozen=True)
class LandingFormat:
    """How the lines of one landing folder are read: the reason of a line that cannot be read
    at all (undecodable bytes), and the CSV columns (None for JSON Lines)."""

    malformed: str
    header: tuple[str, ...] | None = None


LANDING_FORMATS = {
    "registered_users": LandingFormat("malformed_csv", REGISTERED_USERS_HEADER),
    "gym_logins": LandingFormat("malformed_csv", GYM_LOGINS_HEADER),
    "kafka_multiplex": LandingFormat("malformed_json"),
}


def _csv_fields(lines: DataFrame, header: tuple[str, ...]) -> DataFrame:
    """Split CSV lines by the header of their own file (columns may come in any order).
    Returns the data lines with one raw string column per expected column and ``_malformed``.
    The first line is the header only when it names at least one expected column and none
    twice; a file without a header (or with an ambiguous one) cannot say which value is which,
    so all its lines, the first included, are data and malformed (quarantined, never silently
    lost)."""
    first = lines.groupBy("source_file").agg(F.min("line").alias("_header_line"))
    with_first = lines.join(first, on="source_file", how="inner")
    clean = F.transform(F.split(P.ascii_lower(F.col("raw")), ","), lambda h: F.trim(F.regexp_replace(h, '"', "")))
    headers = with_first.where(F.col("line") == F.col("_header_line")).select(
        "source_file", clean.alias("_header"),
        (F.exists(clean, lambda h: h.isin(*header))
         & (F.size(F.array_distinct(F.filter(clean, lambda h: h.isin(*header))))
            == F.size(F.filter(clean, lambda h: h.isin(*header))))).alias("_has_header"))
    data = with_first.join(headers, on="source_file", how="inner").where(
        (F.col("line") > F.col("_header_line")) | ~F.col("_has_header"))
    values = F.split(F.col("raw"), ",")
    cols = {
        name: P.blank_to_null(F.regexp_replace(
            F.when(F.array_position("_header", name) > 0,
                   F.try_element_at(values, F.array_position("_header", name).cast("int"))), '"', ""))
        for name in header
    }
    return data.select(
        "source_file", "line", "raw",
        (~F.col("_has_header") | (F.size(values) != F.size("_header"))).alias("_malformed"),
        *[c.alias(f"_{n}") for n, c in cols.items()],
    )


def parse_registered_users(lines: DataFrame) -> DataFrame:
    """`registered_users` CSV lines to bronze columns plus ``reason``."""
    d = _csv_fields(lines, REGISTERED_USERS_HEADER)
    uid, dev, mac, ts = (F.col(f"_{c}") for c in REGISTERED_USERS_HEADER)
    user_id, device_id, reg = P.as_long(uid), P.as_long(dev), P.as_double(ts)
    reason = P.first_problem(
        (F.col("_malformed"), "malformed_csv"),
        P.missing(uid, "user_id"), P.wrong_type(uid, user_id, "user_id"),
        P.missing(dev, "device_id"), P.wrong_type(dev, device_id, "device_id"),
        P.missing(mac, "mac_address"), P.invalid(~mac.rlike(P.MAC_PATTERN), "mac_address"),
        P.missing(ts, "registration_timestamp"), P.wrong_type(ts, reg, "registration_timestamp"),
        P.out_of_range(ts, P.epoch_seconds_to_timestamp(ts), "registration_timestamp"),
    )
    return d.select(
        user_id.alias("user_id"), device_id.alias("device_id"), P.ascii_lower(mac).alias("mac_address"),
        reg.alias("registration_timestamp"), "source_file", "line", "raw", reason.alias(REASON),
    )


def parse_gym_logins(lines: DataFrame) -> DataFrame:
    """`gym_logins` CSV lines to bronze columns plus ``reason`` (an empty logout is valid)."""
    d = _csv_fields(lines, GYM_LOGINS_HEADER)
    mac, gym_raw, login_raw, logout_raw = (F.col(f"_{c}") for c in GYM_LOGINS_HEADER)
    gym, login, logout = P.as_long(gym_raw), P.as_double(login_raw), P.as_double(logout_raw)
    reason = P.first_problem(
        (F.col("_malformed"), "malformed_csv"),
        P.missing(mac, "mac_address"), P.invalid(~mac.rlike(P.MAC_PATTERN), "mac_address"),
        P.missing(gym_raw, "gym"), P.wrong_type(gym_raw, gym, "gym"),
        P.missing(login_raw, "login"), P.wrong_type(login_raw, login, "login"),
        P.out_of_range(login_raw, P.epoch_seconds_to_timestamp(login_raw), "login"),
        P.wrong_type(logout_raw, logout, "logout"),
        P.out_of_range(logout_raw, P.epoch_seconds_to_timestamp(logout_raw), "logout"),
    )
    return d.select(
        P.ascii_lower(mac).alias("mac_address"), gym.alias("gym"), login.alias("login"), logout.alias("logout"),
        "source_file", "line", "raw", reason.alias(REASON),
    )


def payload_struct(value: Column) -> Column:
    """The JSON payload inside a Kafka record's `value`, every field as raw text."""
    return _from_json(value, PAYLOAD_FIELDS)


def with_payload(df: DataFrame, value: Column) -> DataFrame:
    """Adds ``_p`` (the raw payload) and ``_a`` (its raw address). Parsed once, in their own
    projection, so that every typed field reads the same parse instead of parsing again."""
    with_p = df.withColumn("_p", payload_struct(value))
    address = F.from_json(F.col("_p")["address"], _string_schema(ADDRESS_FIELDS, corrupt=False))
    return with_p.withColumn("_a", address)


def typed_payload(p: Column, a: Column) -> dict[str, Column]:
    """Typed payload columns of every topic from a raw payload ``p`` and raw address ``a``."""
    return {
        "user_id": P.as_long(p["user_id"]),
        "update_type": p["update_type"],
        "updated": P.epoch_seconds_to_timestamp(p["timestamp"]),
        "dob": P.parse_dob(p["dob"]),
        "sex": p["sex"], "gender": p["gender"], "first_name": p["first_name"], "last_name": p["last_name"],
        "street_address": a["street_address"], "city": a["city"], "state": a["state"],
        "zip": P.as_int(a["zip"]),
        "workout_id": P.as_int(p["workout_id"]),
        "action": p["action"],
        "session_id": P.as_int(p["session_id"]),
        "device_id": P.as_long(p["device_id"]),
        "time": P.instant_to_timestamp(p["time"]),
        "heartrate": P.heartrate(p["heartrate"]),
    }


def _instant_checks(raw: Column, parsed: Column, field: str) -> tuple[tuple[Column, str], ...]:
    """A required epoch-seconds field: present, a number, inside the accepted range."""
    return (P.missing(raw, field), P.wrong_type(raw, P.as_double(raw), field), P.out_of_range(raw, parsed, field))


def payload_problem(topic: Column, p: Column, a: Column) -> Column:
    """The first problem of a payload for its topic, NULL when it is usable downstream."""
    t = typed_payload(p, a)
    user_info = P.first_problem(
        P.missing(p["user_id"], "user_id"), P.wrong_type(p["user_id"], t["user_id"], "user_id"),
        P.missing(p["update_type"], "update_type"),
        P.invalid(~p["update_type"].isin("new", "update", "delete"), "update_type"),
        *_instant_checks(p["timestamp"], t["updated"], "timestamp"),
        P.invalid(p["dob"].isNotNull() & t["dob"].isNull(), "dob"),
        P.wrong_type(a["zip"], t["zip"], "zip"),
    )
    workout = P.first_problem(
        P.missing(p["user_id"], "user_id"), P.wrong_type(p["user_id"], t["user_id"], "user_id"),
        P.missing(p["workout_id"], "workout_id"), P.wrong_type(p["workout_id"], t["workout_id"], "workout_id"),
        *_instant_checks(p["timestamp"], t["updated"], "timestamp"),
        P.missing(p["action"], "action"), P.invalid(~p["action"].isin("start", "stop"), "action"),
        P.missing(p["session_id"], "session_id"), P.wrong_type(p["session_id"], t["session_id"], "session_id"),
    )
    bpm = P.first_problem(
        P.missing(p["device_id"], "device_id"), P.wrong_type(p["device_id"], t["device_id"], "device_id"),
        P.missing(p["time"], "time"),
        (P.as_double(p["time"]).isNull() & p["time"].try_cast("timestamp").isNull(), "wrong_type:time"),
        P.out_of_range(p["time"], t["time"], "time"),
        P.invalid(~P.is_number(p["time"]) & t["time"].isNull(), "time"),
        P.wrong_type(p["heartrate"], P.as_double(p["heartrate"]), "heartrate"),
        P.invalid(p["heartrate"].isNotNull() & t["heartrate"].isNull(), "heartrate"),
    )
    by_topic = (F.when(topic == "user_info", user_info).when(topic == "workout", workout)
                .when(topic == "bpm", bpm))
    return F.when(p.isNull() | p[CORRUPT].isNotNull(), F.lit("malformed_payload")).otherwise(by_topic)


def parse_kafka_multiplex(lines: DataFrame, date_lookup: DataFrame) -> DataFrame:
    """Kafka multiplex JSON lines to bronze columns plus ``reason``; the payload is validated
    too, so silver decodes only records it can use. ``date``/``week_part`` come from the
    calendar on the record's timestamp (seconds-based timestamps are detected)."""
    records = lines.select("source_file", "line", "raw", _from_json(F.col("raw"), KAFKA_FIELDS).alias("r"))
    return _validate_kafka(records, date_lookup)


def parse_kafka_records(records: DataFrame, date_lookup: DataFrame) -> DataFrame:
    """Records read straight from Kafka (``source_file``, ``line`` and the columns ``key``,
    ``value``, ``topic``, ``partition``, ``offset``, ``timestamp``) to the same bronze columns
    and reasons as :func:`parse_kafka_multiplex`, without a JSON round trip: the record's fields
    go into the same struct the JSON line would have parsed to. ``raw`` (kept for quarantined
    records) is the record as a JSON line."""
    fields = [F.col(f).cast("string").alias(f) for f in KAFKA_FIELDS]
    record = F.struct(*fields, F.lit(None).cast("string").alias(CORRUPT))
    raw = F.to_json(F.struct(*[F.col(f) for f in KAFKA_FIELDS]))
    return _validate_kafka(records.select("source_file", "line", raw.alias("raw"), record.alias("r")), date_lookup)


def _validate_kafka(records: DataFrame, date_lookup: DataFrame) -> DataFrame:
    """Validation shared by both Kafka feeds: ``records`` has ``r``, the record's fields as text."""
    rec = with_payload(records, F.col("r")["value"])
    r = F.col("r")
    partition, offset = P.as_long(r["partition"]), P.as_long(r["offset"])
    timestamp = P.kafka_timestamp_ms(r["timestamp"])
    outer = P.first_problem(
        (r.isNull() | r[CORRUPT].isNotNull(), "malformed_json"),
        P.missing(r["topic"], "topic"), P.invalid(~r["topic"].isin(*KAFKA_TOPICS), "topic"),
        P.missing(r["value"], "value"),
        P.missing(r["partition"], "partition"), P.wrong_type(r["partition"], partition, "partition"),
        P.missing(r["offset"], "offset"), P.wrong_type(r["offset"], offset, "offset"),
        P.missing(r["timestamp"], "timestamp"),
        P.wrong_type(r["timestamp"], P.as_double(r["timestamp"]), "timestamp"),
        P.invalid(timestamp.isNull(), "timestamp"),
    )
    reason = F.coalesce(outer, payload_problem(r["topic"], F.col("_p"), F.col("_a")))
    parsed = rec.select(
        r["key"].alias("key"), r["value"].alias("value"), r["topic"].alias("topic"),
        partition.alias("partition"), offset.alias("offset"), timestamp.alias("timestamp"),
        F.to_date(F.timestamp_millis(timestamp)).alias("_day"),
        "source_file", "line", "raw", reason.alias(REASON),
    )
    calendar = date_lookup.select(F.col("date").alias("_day"), "date", "week_part")
    return parsed.join(F.broadcast(calendar), on="_day", how="left").drop("_day")


#: Each topic's payload fields; the typed columns decoded from them (``typed_payload``) have
#: the same names, but for ``timestamp`` (``updated``) and ``address`` (its own fields).
TOPIC_FIELDS = {
    "user_info": ("user_id", "update_type", "timestamp", "dob", "sex", "gender", "first_name", "last_name", "address"),
    "workout": ("user_id", "workout_id", "timestamp", "action", "session_id"),
    "bpm": ("device_id", "time", "heartrate"),
}
_TYPED_FROM = {"timestamp": ("updated",), "address": ADDRESS_FIELDS}


def decode_kafka(bronze: DataFrame, topic: str) -> DataFrame:
    """Typed payload columns of one topic's bronze records, with Kafka's partition and offset.

    Bronze holds only payloads that parsed as JSON objects, so only the topic's own fields
    are read, and no corrupt-record column is kept: the same values for less work (parsing
    5M heart-rate payloads alone, measured: 11.1 s for every topic's fields, 5.5 s for three)."""
    return decode_payloads(bronze.where(F.col("topic") == topic), topic, ("partition", "offset", "timestamp"))


def decode_payloads(rows: DataFrame, topic: str, keep: tuple[str, ...] = ()) -> DataFrame:
    """Typed payload columns of ``rows`` whose ``value`` holds payloads of ``topic``, after the
    columns ``keep`` of the rows."""
    fields = TOPIC_FIELDS[topic]
    rows = rows.withColumn("_p", F.from_json(F.col("value"), _string_schema(fields, corrupt=False)))
    if "address" in fields:
        rows = rows.withColumn("_a", F.from_json(F.col("_p")["address"], _string_schema(ADDRESS_FIELDS, corrupt=False)))
    typed = typed_payload(F.col("_p"), F.col("_a"))
    columns = [name for f in fields for name in _TYPED_FROM.get(f, (f,))]
    return rows.select(*keep, *[typed[n].alias(n) for n in columns])
