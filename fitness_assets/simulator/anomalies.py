"""Lines the consumer must quarantine, each derived from a valid record with ONE defect.

A defect is chosen so that exactly one reason of the consumer's vocabulary applies, whatever
order the checks run in: the rest of the line stays valid. Reasons:

- CSV: ``malformed_csv``, ``missing_field:<col>``, ``wrong_type:<col>``,
  ``invalid_value:mac_address``.
- Kafka record: ``malformed_json``, ``missing_field:<f>``, ``wrong_type:<f>``,
  ``invalid_value:topic``.
- Kafka payload: ``malformed_payload``, ``missing_field:<f>``, ``wrong_type:<f>``,
  ``invalid_value:<f>``.
"""

from __future__ import annotations

import json
import random
from typing import Any

#: Anomaly groups per family; the generator guarantees one line of every group whose rate is
#: positive. A group is a family of reasons (the field varies inside it).
CSV_GROUPS = {
    "malformed_rate": ("malformed_csv",),
    "missing_field_rate": ("missing_field",),
    "wrong_type_rate": ("wrong_type", "invalid_mac"),
}
KAFKA_GROUPS = {
    "malformed_rate": ("malformed_json", "malformed_payload"),
    "missing_field_rate": ("record_missing", "payload_missing"),
    "wrong_type_rate": (
        "record_wrong_type",
        "invalid_topic",
        "payload_wrong_type",
        "payload_invalid_value",
    ),
}

REGISTERED_COLUMNS = ("user_id", "device_id", "mac_address", "registration_timestamp")
GYM_COLUMNS = ("mac_address", "gym", "login", "logout")
CSV_COLUMNS = {"registered_users": REGISTERED_COLUMNS, "gym_logins": GYM_COLUMNS}
CSV_REQUIRED = {"registered_users": REGISTERED_COLUMNS, "gym_logins": GYM_COLUMNS[:3]}
_CSV_WRONG_TYPES = {
    "user_id": ("abc", "n/a", "12x"),
    "device_id": ("abc", "dev-7", "none"),
    "registration_timestamp": ("yesterday", "soon", "12:30"),
    "gym": ("abc", "gym-2", "north"),
    "login": ("yesterday", "soon", "12:30"),
    "logout": ("later", "never", "tbd"),
}
_BAD_MACS = ("zz:zz:zz:zz:zz:zz", "00:1b:44:11:3a", "001b44113ab7", "00-1b-44-11-3a-b7")

KAFKA_FIELDS = ("key", "value", "topic", "partition", "offset", "timestamp")
KAFKA_REQUIRED = ("topic", "value", "partition", "offset", "timestamp")
_RECORD_WRONG_TYPES = {"partition": ("x", "p1"), "offset": ("abc", "next"), "timestamp": ("soon", "now")}
_BAD_TOPICS = ("clicks", "user-info", "heartbeat")
PAYLOAD_REQUIRED = {
    "user_info": ("user_id", "update_type", "timestamp"),
    "workout": ("user_id", "workout_id", "timestamp", "action", "session_id"),
    "bpm": ("device_id", "time"),
}
_PAYLOAD_WRONG_TYPES = {
    "user_info": {"user_id": ("abc", "u-1"), "timestamp": ("soon", "yesterday")},
    "workout": {
        "user_id": ("abc", "u-1"),
        "workout_id": ("x", "w-3"),
        "timestamp": ("soon", "yesterday"),
        "session_id": ("s-1", "abc"),
    },
    "bpm": {"device_id": ("dev", "abc"), "time": ("soon", "yesterday"), "heartrate": ("fast", "high")},
}
_PAYLOAD_INVALID_VALUES = {
    "update_type": ("upsert", "insert", "remove"),
    "dob": ("1990-01-31", "31.01.1990", "Jan 31 1990"),
    "action": ("pause", "resume", "end"),
}


def dumps(value: Any) -> str:
    """Compact JSON, as every Kafka line and payload is written."""
    return json.dumps(value, separators=(",", ":"))


def kafka_line(key: str | None, payload: str, topic: str, partition: int, offset: int, timestamp: int) -> str:
    """One valid Kafka multiplex line (with its newline)."""
    record = {
        "key": key,
        "value": payload,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
    }
    return dumps(record) + "\n"


def payload_invalid_fields(topic: str, payload: dict[str, Any]) -> tuple[str, ...]:
    """Fields of ``payload`` that can carry an ``invalid_value`` defect (may be empty)."""
    if topic == "user_info":
        return ("update_type", "dob") if payload.get("dob") is not None else ("update_type",)
    if topic == "workout":
        return ("action",)
    return ()


def _truncate(text: str, rng: random.Random) -> str:
    # A proper prefix of a JSON object never parses: the closing brace is missing.
    return text[: rng.randint(1, len(text) - 1)]


def bad_csv_line(source: str, values: list[str], group: str, rng: random.Random) -> tuple[str, str]:
    """A defective copy of the CSV row ``values`` and its quarantine reason."""
    columns = CSV_COLUMNS[source]
    values = list(values)
    if group == "malformed_csv":
        if rng.random() < 0.3:
            return ",".join(values + ["extra"]) + "\n", "malformed_csv"
        keep = rng.randint(1, len(values) - 1)
        kept = values[:keep]
        if keep > 1 and len(kept[-1]) > 1:
            kept[-1] = kept[-1][: rng.randint(1, len(kept[-1]) - 1)]
        return ",".join(kept) + "\n", "malformed_csv"
    if group == "missing_field":
        column = rng.choice(CSV_REQUIRED[source])
        values[columns.index(column)] = ""
        return ",".join(values) + "\n", f"missing_field:{column}"
    if group == "wrong_type":
        column = rng.choice([c for c in columns if c in _CSV_WRONG_TYPES])
        values[columns.index(column)] = rng.choice(_CSV_WRONG_TYPES[column])
        return ",".join(values) + "\n", f"wrong_type:{column}"
    if group == "invalid_mac":
        values[columns.index("mac_address")] = rng.choice(_BAD_MACS)
        return ",".join(values) + "\n", "invalid_value:mac_address"
    raise ValueError(f"unknown CSV anomaly group {group!r}")


def kafka_groups_for(topic: str, payload: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """:data:`KAFKA_GROUPS` restricted to the groups a record of ``topic`` can carry."""
    if payload_invalid_fields(topic, payload):
        return KAFKA_GROUPS
    groups = dict(KAFKA_GROUPS)
    groups["wrong_type_rate"] = tuple(g for g in groups["wrong_type_rate"] if g != "payload_invalid_value")
    return groups


def bad_kafka_line(
    group: str,
    topic: str,
    key: str | None,
    payload: dict[str, Any],
    partition: int,
    offset: int,
    timestamp: int,
    rng: random.Random,
) -> tuple[str, str]:
    """A Kafka multiplex line with one defect of ``group`` and its quarantine reason.

    ``payload`` is a valid payload of ``topic``; the record fields are those of a valid
    record (the caller gives the defective line an offset of its own).
    """
    payload = dict(payload)
    record: dict[str, Any] = {
        "key": key,
        "value": None,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
    }
    reason: str
    if group == "malformed_json":
        record["value"] = dumps(payload)
        choice = rng.random()
        if choice < 0.8:
            return _truncate(dumps(record), rng) + "\n", "malformed_json"
        if choice < 0.9:
            return "[" + dumps(record) + "]\n", "malformed_json"
        return "not json at all\n", "malformed_json"
    if group == "malformed_payload":
        text = dumps(payload)
        choice = rng.random()
        if choice < 0.6:
            record["value"] = _truncate(text, rng)
        else:
            record["value"] = rng.choice(("not json", "[1,2]", "null", "42", '"text"'))
        return dumps(record) + "\n", "malformed_payload"
    if group == "payload_missing":
        name = rng.choice(PAYLOAD_REQUIRED[topic])
        if rng.random() < 0.5:
            del payload[name]
        else:
            payload[name] = None
        reason = f"missing_field:{name}"
    elif group == "payload_wrong_type":
        choices = _PAYLOAD_WRONG_TYPES[topic]
        name = rng.choice(sorted(choices))
        payload[name] = rng.choice(choices[name])
        reason = f"wrong_type:{name}"
    elif group == "payload_invalid_value":
        name = rng.choice(payload_invalid_fields(topic, payload))
        payload[name] = rng.choice(_PAYLOAD_INVALID_VALUES[name])
        reason = f"invalid_value:{name}"
    record["value"] = dumps(payload)
    if group == "record_missing":
        name = rng.choice(KAFKA_REQUIRED)
        if rng.random() < 0.5:
            del record[name]
        else:
            record[name] = None
        reason = f"missing_field:{name}"
    elif group == "record_wrong_type":
        name = rng.choice(sorted(_RECORD_WRONG_TYPES))
        record[name] = rng.choice(_RECORD_WRONG_TYPES[name])
        reason = f"wrong_type:{name}"
    elif group == "invalid_topic":
        record["topic"] = rng.choice(_BAD_TOPICS)
        reason = "invalid_value:topic"
    elif group not in ("payload_missing", "payload_wrong_type", "payload_invalid_value"):
        raise ValueError(f"unknown Kafka anomaly group {group!r}")
    return dumps(record) + "\n", reason
