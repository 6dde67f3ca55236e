"""The Kafka validator without Spark (transforms.kafka_arrow) against the Spark validation of the
multiplex (transforms.bronze._validate_kafka): the same records through both must give the same
bronze rows and the same quarantine rows and reasons. The records: the multiplex cases of the
hostile corpus, a field-by-field corpus of hostile texts and numbers (Spark's casts, Jackson's
JSON leniencies, extreme and non-finite values, time zones), and a simulated chain."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fitness_assets.pipelines.bronze_kafka import KAFKA_COLUMNS, _spark_parse
from fitness_assets.simulator import SimulatorConfig, simulate
from fitness_assets.streaming.source import Batch
from fitness_assets.transforms import bronze as parsers
from fitness_assets.transforms import kafka_arrow, reference

T0 = 1678095123  # 2023-03-06 09:32:03 UTC
BPM = {"device_id": 11, "time": T0 + 60.25, "heartrate": 99.5}
WORKOUT = {"user_id": 1, "workout_id": 2, "timestamp": T0, "action": "start", "session_id": 3}
USER_INFO = {"user_id": 1, "update_type": "new", "timestamp": T0, "dob": "03/06/1990", "first_name": "Ann",
             "last_name": "Lee", "address": {"street_address": "1 Main", "city": "Seattle", "state": "WA",
                                             "zip": 98101}}
BASE = {"bpm": BPM, "workout": WORKOUT, "user_info": USER_INFO}

#: Texts of a field, as JSON strings: Spark's casts (integers, doubles, decimals, timestamps,
#: dates) each have their own grammar, and these probe its edges.
TEXTS = [
    "12", " 12 ", "+12", "-0", "00012", "12.0", "12.5", "1e3", "1.0E20", "0x10", "0x1p3", "１２", "١٢", "12L", "",
    " ", "\t12\n", "12\u00a0", "\x0012", "\x7f12", "1d", "1.5f", "inf", "-INF", "Infinity", "+infinity", "NaN", "-nan", "+nan", "-NaN", "\x7f12 ", "\x85 12",
    ".5", "1.", "1e", "1_000", "true", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "2147483647", "2147483648", "1678095123", "1678095123.5", " 1678095123 ", "1678095123d", "-2208988800",  # pragma: allowlist secret (numbers, not a key)
    "-2208988801", "253402300799", "253402300799.9", "253402300800", "1e17", "soon", "yesterday",
    "2023-03-06T10:15:02.5Z", "2023-03-06T10:15:02Z", "2023-03-06 10:15:02", "2023-03-06", "2023-03", "2023",
    "2023-3-6T1:2:3", "2023-03-06T10:15", "2023-03-06T10", "2023-03-06T10:15:02.1234567Z", "2023-03-06T10:15:02+01:00",
    "2023-03-06T10:15:02+1:00", "2023-03-06T10:15:02 UTC", "2023-03-06T10:15:02America/New_York",
    "2023-03-06T10:15:02 Europe/Paris", "2023-03-06T10:15:02GMT+1", "2023-03-06T10:15:02-0130", "2023-03-06T10:15:02+01",
    "2023-03-06T10:15:02+18:00", "2023-03-06T10:15:02+19:00", "2023-03-06T10:15:02UTC+05:30", "2023-03-06T10:15:02PST",
    "2023-03-06T10:15:02CET", "2023-03-06T10:15:02Mars/Olympus", "2023-03-06T10:15:02z", "2023-03-06T10:15:02.Z",
    "2023-02-30T00:00:00", "2023-03-06T24:00:00", "10:15:02", "T10:15:02", "+2023-03-06", "-2023-03-06", "12023-03-06",
    "0001-01-01", "1899-12-31T23:59:59Z", "1900-01-01T00:00:00Z", "1900-01-01T00:59:59+01:00",
    "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59-01:00", "+10000-01-01", " 2023-03-06T10:15:02Z ",
    "2023-03-06T", "2023/03/06", "2023-03-06T10:15:02:01", "\x012023-03-06", "2023-00-01", "2024-02-29", "2023-02-29",
    "03/06/1990", "3/6/1990", "03/06/90", "03/06/01990", " 03/06/1990", "02/30/1990", "02/29/2000", "02/29/1900",
    "00/10/1990", "13/01/1990", "03/06/0000", "02/29/0000", "12/31/9999", "13/45/1990", "Jan 31 1990", "1990-01-31",
    "new", "update", "delete", "New", " new", "start", "stop", "Stop", "\ud800", "Zoë", '{"zip": "x"}', "[1]",
    # Texts that crashed or stalled the validator: a hex exponent past the double's (OverflowError),
    # more than 4,300 digits (Python's limit on int()), a long digit run that does not match (a
    # regex backtracking over every split of it), and zones the host's tz database has but Java
    # does not (or not in this JVM's tzdata).
    "0x1p99999", "-0x1.8p1024", "0x1p-99999", "9" * 4301, "0" * 5000 + "7", "1" * 3000 + "-", "1" * 3000,
    "2023-03-06T10:15:02." + "1" * 3000 + "Z", "2023-03-06T10:15:02Factory", "2023-03-06T10:15:02ROC",
    "2023-03-06T10:15:02localtime", "2023-03-06T10:15:02America/Coyhaique",
]
#: Field values as JSON numbers and other JSON types.
NUMBERS: list[object] = [
    0, -1, 1, 12, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30, T0, -2208988800, -2208988801,
    253402300799, 253402300800, 1.0, 1.5, -0.0, 1e20, 1e-5, 123456789.125, T0 + 0.25, 253402300799.5, 1e17, 1e300,
    999999999999.0, 1e12, -1e12 + 1, True, False, None, [], [1], {}, {"a": 1},
]
#: Payload texts that are not plain JSON, or JSON that Python and Jackson read differently.
RAW_PAYLOADS = {
    "bpm": [
        "", " ", "not json", "[1, 2]", "null", "42", '"text"', "{", '{"device_id": 11,', "{}",
        "{'device_id': 11, 'time': 1678095183, 'heartrate': 60}",  # single quotes: Jackson reads them
        '{"device_id": 11, "time": 1678095183, "heartrate": NaN}',
        '{"device_id": 11, "time": 1678095183, "heartrate": Infinity}',
        '{"device_id": 11, "time": 1678095183, "heartrate": -Infinity}',
        '{"device_id": 11, "time": 1678095183, "heartrate": +Infinity}',
        '{"device_id": 11, "time": 1678095183, "heartrate": -INF}',
        '{"device_id": 11, "time": 1678095183, "heartrate": 1e400}',
        # Nesting within Jackson's 1000 levels is read wherever the validator is called from;
        # past them it is refused (the parsers recurse: Python's default limit decided before).
        '{"device_id": 11, "time": 1678095183, "heartrate": 60, "x": ' + "[" * 850 + "]" * 850 + "}",
        '{"device_id": 11, "time": 1678095183, "heartrate": 60, "x": ' + "[" * 999 + "]" * 999 + "}",
        '{"device_id": 11, "time": 1678095183, "heartrate": 60, "x": ' + "[" * 1000 + "]" * 1000 + "}",
        "{'device_id': 11, 'time': 1678095183, 'heartrate': 60, 'x': " + "[" * 990 + "]" * 990 + "}",
        "{'device_id': 11, 'time': 1678095183, 'heartrate': 60, 'x': " + "[" * 1001 + "]" * 1001 + "}",
        '{"device_id": 11, "time": 1678095183, "heartrate": 60} trailing text',
        '{"device_id": 11, "time": 1678095183, "heartrate": 60}}',
        '{"device_id": 11, "time": 1678095183, "heartrate": 60, }',
        '{"device_id": 11, "time": 1678095183, "heartrate": 060}',
        '{"device_id": 11, "time": 1678095183, "heartrate": +60}',
        '{"device_id": 11, "time": 1678095183, "heartrate": .5}',
        '{"device_id": 11, "time": 1678095183, /* c */ "heartrate": 60}',
        '{"device_id": 11, "time": 1678095183, "heartrate": "6\t0"}',
        '{"device_id": 11, "time": 1678095183, "heartrate": \'\\\'60\'}',
        '{"device_id": 11, "time": 1678095183, "heartrate": "\\x41"}',
        '{"device_id": 11, "device_id": "x", "time": 1678095183}',
        '{"device_id": "x", "device_id": 11, "time": 1678095183}',
        '{"device_id": 11, "time": 1678095183, "_corrupt_record": "x"}',
        '{"device_id": 11, "time": 1678095183, "_corrupt_record": null}',
        '\ufeff{"device_id": 11, "time": 1678095183}',
        '  \n{"device_id": 11, "time": 1678095183}\n',
        '{"device_id": 11, "time": 1678095183, "x": ' + "9" * 1001 + "}",
        '{"device_id": 11, "time": 1678095183, "x": ' + "9" * 999 + "}",
        '{"device_id": 11, "time": 1678095183, "x": ' + "[" * 300 + "]" * 300 + "}",
        '{"device_id": 11, "time": 1678095183, "x": ' + "[" * 1200 + "]" * 1200 + "}",
        '{"device_id": 11, "time": 1678095183, "heartrate": "\\ud83d\\ude00"}',
        '{"device_id": 11, "time": 1678095183, "heartrate": truex}',
        '{"Device_ID": 11, "time": 1678095183}',
    ],
    "user_info": [
        '{"user_id": 1, "update_type": "new", "timestamp": 1678095123, "address": "{\\"zip\\": \\"x\\"}"}',
        '{"user_id": 1, "update_type": "new", "timestamp": 1678095123, "address": "{\'zip\': 12}"}',
        '{"user_id": 1, "update_type": "new", "timestamp": 1678095123, "address": "not json"}',
        '{"user_id": 1, "update_type": "new", "timestamp": 1678095123, "address": [{"zip": "x"}]}',
        '{"user_id": 1, "update_type": "new", "timestamp": 1678095123, "address": {"zip": 2147483648}}',
        '{"user_id": 1, "update_type": "new", "timestamp": 1678095123, "address": {"zip": null}}',
        '{"user_id": 1, "update_type": "new", "timestamp": 1678095123, "address": "{\\"zip\\": 1} x"}',
    ],
}


def _payloads() -> list[tuple[str, bytes | None]]:
    """(topic, value) for every substitution of every payload field, plus the raw payloads."""
    out: list[tuple[str, bytes | None]] = []
    for topic, base in BASE.items():
        out.append((topic, json.dumps(base).encode()))
        fields = list(base) + (["zip"] if topic == "user_info" else [])
        for name in fields:
            for value in [*TEXTS, *NUMBERS]:
                payload = dict(base)
                if name == "zip":
                    payload["address"] = dict(USER_INFO["address"], zip=value)
                else:
                    payload[name] = value
                out.append((topic, json.dumps(payload).encode("utf-8", "surrogatepass")))
            payload = dict(base)
            if name in payload:
                del payload[name]
                out.append((topic, json.dumps(payload).encode()))
    for topic, texts in RAW_PAYLOADS.items():
        out += [(topic, text.encode("utf-8", "surrogatepass")) for text in texts]
    # The payload cases of the hostile landing corpus (test_hostile_input) and undecodable bytes.
    out += [("bpm", b"not json"), ("bpm", b"[1, 2]"), ("bpm", b"{}"), ("bpm", b"\xff\xfe not utf-8"),
            ("bpm", b'{"key": "\xe9"}'), ("bpm", None), ("workout", b"{not json"),
            ("user_info", json.dumps(USER_INFO | {"first_name": "Zoë", "last_name": "Øster 😀"}).encode())]
    return out


def _records() -> Batch:
    """Every payload under a valid record, then the record-level cases: unknown topics and
    timestamps missing, in seconds, at and beyond the accepted range."""
    batch = Batch()

    def add(topic, value, timestamp=T0 * 1000, key=b"k", partition=0):
        batch.topics.append(topic)
        batch.partitions.append(partition)
        batch.offsets.append(len(batch.offsets))
        batch.timestamps.append(timestamp)
        batch.keys.append(key)
        batch.values.append(value)

    for topic, value in _payloads():
        add(topic, value, partition=len(batch.offsets) % 3)
    good = json.dumps(BPM).encode()
    for timestamp in (None, T0, 0, -1, 10**16, -(10**15), -2208988800000, -2208988800001, 253402300799999,
                      253402300800000, 10**11 - 1, 10**11, 2**63 - 1, -(2**63)):
        add("bpm", good, timestamp=timestamp)
    for topic in ("nope", "", "BPM", "bpm "):
        add(topic, good)
    add("bpm", good, key=None)
    add("bpm", good, key=b"\xff key")
    add("workout", b'{"a": "quote \\" and \\\\ and \\u0001 and \\n and \xc3\xa9"}', key=b'k "1"\n')
    return batch


def _simulated(tmp_path: Path) -> Batch:
    """The multiplex lines of a simulated chain as Kafka records (lines whose record fields a
    Kafka message cannot carry, such as a text partition, are left out)."""
    simulate(SimulatorConfig.tiny(batches=1), tmp_path / "landing")
    batch = Batch()
    for path in sorted((tmp_path / "landing" / "kafka_multiplex").glob("*")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not all(
                    type(record.get(f)) is int for f in ("partition", "offset")) or not isinstance(
                    record.get("topic"), str) or not isinstance(record.get("value"), str | None) or not isinstance(
                    record.get("key"), str | None) or type(record.get("timestamp")) not in (int, type(None)):
                continue
            batch.topics.append(record["topic"])
            batch.partitions.append(record["partition"])
            batch.offsets.append(len(batch.offsets))
            batch.timestamps.append(record.get("timestamp"))
            batch.keys.append(None if record.get("key") is None else record["key"].encode())
            batch.values.append(None if record["value"] is None else record["value"].encode())
    return batch


@pytest.fixture(scope="module")
def calendar(spark):
    return reference.date_lookup(spark, dt.date(2023, 1, 1), dt.date(2024, 12, 31)).select("date", "week_part")


def _both(spark, calendar, batch: Batch) -> tuple[tuple[list, list], tuple[list, list]]:
    table = calendar.toArrow()
    fast = kafka_arrow.validate_records(batch.topics, batch.partitions, batch.offsets, batch.timestamps,
                                        batch.keys, batch.values, table)
    slow = _spark_parse(spark, lambda records: parsers.parse_kafka_records(records, calendar), batch, None)

    def rows(result):
        bronze, quarantine = result
        columns = [*KAFKA_COLUMNS, "source_file"]
        return (sorted(bronze.select(columns).to_pylist(), key=lambda r: (r["source_file"], r["offset"])),
                sorted(quarantine.select(["source_file", "line", "raw", "reason"]).to_pylist(),
                       key=lambda r: (r["source_file"], r["line"])))

    return rows(fast), rows(slow)


def _assert_same(fast, slow, batch: Batch) -> None:
    (fast_bronze, fast_quarantine), (slow_bronze, slow_quarantine) = fast, slow
    values = dict(zip(batch.offsets, batch.values, strict=True))
    slow_by = {(r["source_file"], r["line"]): r for r in slow_quarantine}
    differences = [(values[r["line"]], r["reason"], slow_by.get((r["source_file"], r["line"]), {}).get("reason"))
                   for r in fast_quarantine if slow_by.get((r["source_file"], r["line"])) != r]
    fast_lines = {(r["source_file"], r["line"]) for r in fast_quarantine}
    differences += [(values[r["line"]], None, r["reason"]) for r in slow_quarantine
                    if (r["source_file"], r["line"]) not in fast_lines]
    assert not differences, f"{len(differences)} records decided differently (value, arrow, spark): {differences[:20]}"
    assert fast_quarantine == slow_quarantine
    assert fast_bronze == slow_bronze
    assert len(fast_bronze) + len(fast_quarantine) == len(batch)


def test_the_arrow_validator_decides_hostile_records_exactly_as_spark(spark, calendar):
    batch = _records()
    fast, slow = _both(spark, calendar, batch)
    _assert_same(fast, slow, batch)
    # The corpus is not trivially one-sided: it has good rows and most kinds of reasons.
    reasons = {r["reason"].split(":")[0] for r in fast[1]}
    assert len(fast[0]) > 100 and {"malformed_payload", "missing_field", "wrong_type", "invalid_value"} <= reasons


def test_the_arrow_validator_decides_a_simulated_chain_exactly_as_spark(spark, calendar, tmp_path):
    batch = _simulated(tmp_path)
    assert len(batch) > 500
    fast, slow = _both(spark, calendar, batch)
    _assert_same(fast, slow, batch)
    assert fast[1], "the simulator's anomalies reach the quarantine"


def test_the_arrow_validator_gives_the_file_feeds_reasons(spark, calendar):
    """The same records as `kafka_multiplex/` JSON lines, through the file feed's parser: the
    same bronze rows (but `source_file`) and the same reason for every quarantined record."""
    batch = _records()
    fast = kafka_arrow.validate_records(batch.topics, batch.partitions, batch.offsets, batch.timestamps,
                                        batch.keys, batch.values, calendar.toArrow())
    lines, offsets = [], []
    for topic, partition, offset, timestamp, key, value in zip(batch.topics, batch.partitions, batch.offsets,
                                                               batch.timestamps, batch.keys, batch.values, strict=True):
        try:
            text = None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            continue  # bytes a JSON line cannot carry; quarantined before any parsing on both feeds
        lines.append(("f", offset, json.dumps({"key": None if key is None else key.decode("utf-8", "backslashreplace"),
                                               "value": text, "topic": topic, "partition": partition,
                                               "offset": offset, "timestamp": timestamp})))
        offsets.append(offset)
    frame = spark.createDataFrame(lines, "source_file string, line long, raw string")
    parsed = parsers.parse_kafka_multiplex(frame, calendar).toArrow()
    file_reasons = {r["line"]: r["reason"] for r in parsed.select(["line", "reason"]).to_pylist()}
    arrow_reasons = {r["line"]: r["reason"] for r in fast[1].to_pylist() if r["line"] in set(offsets)}
    arrow_reasons |= {o: None for o in fast[0].column("offset").to_pylist()}
    assert arrow_reasons == file_reasons
    file_bronze = sorted(parsed.filter(pa.compute.is_null(parsed["reason"])).select(list(KAFKA_COLUMNS)).to_pylist(),
                         key=lambda r: r["offset"])
    assert file_bronze == sorted(fast[0].select(list(KAFKA_COLUMNS)).to_pylist(), key=lambda r: r["offset"])


#: A plain, usable record line and variations of it at the record level: everything `plain_lines`
#: must leave to Spark (quoted or fractional numbers, booleans, out-of-range integers, duplicate
#: fields, escaped half surrogate pairs, Jackson-only syntax, other JSON types) and a few it takes.
GOOD_LINE = {"key": "k", "value": json.dumps(BPM), "topic": "bpm", "partition": 1, "offset": 7,
             "timestamp": T0 * 1000}
VARIANTS: list[object] = [
    *[("partition", v) for v in ("1", 1.0, True, -1, 2**31 - 1, 2**31, 2**63, None, [], {})],
    *[("offset", v) for v in ("7", 7.5, False, -7, 2**63 - 1, 2**63, 10**30, None)],
    *[("timestamp", v) for v in (T0, T0 * 1000.0, str(T0 * 1000), -1, 0, 10**11 - 1, 10**11, 2**63 - 1, 2**63,
                                 253402300800000, -2208988800001, None, True)],
    *[("key", v) for v in (None, 12, "", "k\u00e9\U0001f600", "\ud800", {"a": 1}, ["k"], True)],
    *[("value", v) for v in (BPM, None, 12, "", "not json", json.dumps(BPM) + " x", "\udc00",
                             json.dumps({**BPM, "heartrate": "\ud800"}))],
    *[("topic", v) for v in ("workout", "nope", "BPM", "", None, 1, "bp\u0000m", "\ud83d")],
]
RAW_LINES = [
    '{"key": "k", "value": "{}", "topic": "bpm", "partition": 1, "offset": 1, "timestamp": 1678095123000}',
    # Duplicate fields: the last one counts (Python and Spark alike), in both orders.
    '{"topic": "nope", "key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", '
    '"topic": "bpm", "partition": 1, "offset": 2, "timestamp": 1678095123000}',
    '{"topic": "bpm", "key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", '
    '"topic": "nope", "partition": 1, "offset": 3, "timestamp": 1678095123000}',
    '{"partition": "x", "key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", '
    '"topic": "bpm", "partition": 1, "offset": 4, "timestamp": 1678095123000}',
    # Jackson's leniencies and Python's: single quotes, NaN, text after the object, blanks, escapes.
    "{'key': 'k', 'value': '{}', 'topic': 'bpm', 'partition': 1, 'offset': 5, 'timestamp': 1678095123000}",
    '{"key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", "topic": "bpm", '
    '"partition": 1, "offset": 6, "timestamp": 1678095123000} trailing',
    '  {"key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", "topic": "bpm", '
    '"partition": 1, "offset": 7, "timestamp": 1678095123000}  ',
    '{"key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": NaN}", "topic": "bpm", '
    '"partition": 1, "offset": 8, "timestamp": 1678095123000}',
    '{"key": "k\\u0000", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", '
    '"topic": "\\u0062pm", "partition": 1, "offset": 9, "timestamp": 1678095123000}',
    '{"key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", "topic": "bpm", '
    '"partition": 01, "offset": 10, "timestamp": 1678095123000}',
    '{"key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", "topic": "bpm", '
    '"partition": 1, "offset": 11, "timestamp": 1678095123000, "extra": [1, {"a": 2}]}',
    '{"key": "k", "value": "{\\"device_id\\": 1, \\"time\\": 1678095123, \\"heartrate\\": 60}", "topic": "bpm", '
    '"partition": -0, "offset": 12, "timestamp": 1678095123000}',
    # No partition or no offset (never so in a Kafka record), with other problems before them.
    '{"key": "k", "value": "{}", "topic": "nope", "offset": 1, "timestamp": 1678095123000}',
    '{"key": "k", "value": null, "topic": "bpm", "partition": 1, "timestamp": 1678095123000}',
    '{"value": "{}", "partition": null, "offset": null}',
    '{"key": "k", "value": "{}", "topic": "bpm", "offset": 1, "timestamp": "x"}',
    '{"key": "k", "value": "{}", "topic": "bpm", "partition": 1, "timestamp": 1678095123000}',
    "[1, 2]", "12", '"text"', "null", "{}", "{", "[" * 2000 + "]" * 2000, "{\"a\":" * 1200 + "1" + "}" * 1200,
    '{"value": "' + "9" * 1500 + '", "topic": "bpm", "partition": ' + "1" * 1100 + ', "offset": 1, "timestamp": 1}',
]




def _compact(key: str = '"11"', device: str = "11", time: str = str(T0 + 60), heartrate: str = "99.5",
             partition: str = "1", offset: str = "7", timestamp: str = str(T0 * 1000)) -> str:
    """A heart-rate record in the producer's compact form, each part given as its JSON text."""
    value = f'{{\\"device_id\\":{device},\\"time\\":{time},\\"heartrate\\":{heartrate}}}'
    return f'{{"key":{key},"value":"{value}","topic":"bpm","partition":{partition},"offset":{offset},"timestamp":{timestamp}}}'


def _iso(text: str) -> str:
    return '\\"' + text + '\\"'


#: Compact lines at every edge of the Arrow fast path (kafka_arrow.COMPACT_BPM): those it may
#: take and those it must leave to the general path, accepted or not.
COMPACT_VARIANTS = [
    *[_compact(key=k) for k in ("null", '""', '"a-b_C9"', '"k\\u0041"', '"k\\"x"', '"' + "x" * 64 + '"',
                                '"' + "x" * 65 + '"', "1", "true")],
    *[_compact(device=d) for d in ("0", "01", "-1", "9" * 18, "9223372036854775807", "9223372036854775808", "1.0",
                                   "1e2", '\\"11\\"', "null")],
    *[_compact(time=t) for t in (
        "0", "00", "-1", "9" * 11, "253402300799", "253402300800", f"{T0}.123456789012", f"{T0}.1234567890123",
        f"{T0}.", f"{T0}e0", "1e9", "null", _iso("2023-03-06T10:15:02Z"), _iso("2023-03-06T10:15:02.123456789Z"),
        _iso("2023-03-06T10:15:02.1234567891Z"), _iso("2023-02-28T23:59:59Z"), _iso("2023-02-29T00:00:00Z"),
        _iso("2024-02-29T00:00:00Z"), _iso("2023-04-30T00:00:00Z"), _iso("2023-04-31T00:00:00Z"),
        _iso("2023-03-31T00:00:00Z"), _iso("1899-12-31T23:59:59Z"), _iso("1899-12-28T23:59:59Z"), _iso("1900-01-01T00:00:00Z"),
        _iso("2999-12-28T23:59:59Z"), _iso("3000-01-01T00:00:00Z"), _iso("2023-00-01T00:00:00Z"),
        _iso("2023-13-01T00:00:00Z"), _iso("2023-03-00T00:00:00Z"), _iso("2023-03-06T24:00:00Z"),
        _iso("2023-03-06T10:60:00Z"), _iso("2023-03-06T10:15:60Z"), _iso("2023-03-06 10:15:02Z"),
        _iso("2023-03-06T10:15:02"), _iso("2023-03-06T10:15:02+01:00"), _iso("2023-03-06T10:15:02.Z"))],
    *[_compact(heartrate=h) for h in ("null", "0", "-0", "-99.5", "9" * 9, "9" * 9 + "." + "9" * 12, "1" + "0" * 9,
                                      "9" * 12, "-" + "9" * 12 + ".9", "1e3", "99.", ".5", "-", "NaN",
                                      '\\"99\\"', "true")],
    *[_compact(partition=p) for p in ("0", "01", "9" * 9, "2147483647", "2147483648", "-1", "1.0")],
    *[_compact(offset=o) for o in ("0", "9" * 18, "9223372036854775807", "9223372036854775808", "-0")],
    *[_compact(timestamp=t) for t in ("0", "9" * 11, "1" + "0" * 11, "253402300799999", "253402300800000",
                                      "9" * 18, "253402300799", str(T0), "-1", "1" + "0" * 18)],
    " " + _compact(), _compact() + " ", _compact().replace('"topic":"bpm"', '"topic": "bpm"'),
    _compact().replace('"topic":"bpm"', '"topic":"workout"'), _compact().replace("}", "} ", 1),
    _compact().replace('"value":"{', '"value":"{\\"extra\\":1,'),
]


def _landing_lines(tmp_path: Path) -> list[str]:
    lines = []
    for name, value in VARIANTS:
        record = dict(GOOD_LINE)
        if value is None and name in ("key", "partition"):
            del record[name]
        else:
            record[name] = value
        lines.append(json.dumps(record))
    lines += RAW_LINES + COMPACT_VARIANTS
    batch = _records()
    for topic, partition, offset, timestamp, key, value in zip(batch.topics, batch.partitions, batch.offsets,
                                                               batch.timestamps, batch.keys, batch.values, strict=True):
        try:
            text = None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        lines.append(json.dumps({"key": None if key is None else key.decode("utf-8", "backslashreplace"),
                                 "value": text, "topic": topic, "partition": partition, "offset": offset,
                                 "timestamp": timestamp}))
    simulate(SimulatorConfig.tiny(batches=1), tmp_path / "landing")
    for path in sorted((tmp_path / "landing" / "kafka_multiplex").glob("*")):
        lines += path.read_text().splitlines()
    return lines


def test_plain_lines_are_decided_without_spark_exactly_as_spark_decides_them(spark, calendar, tmp_path):
    """The multiplex landing path with the Python pre-pass (`plain_lines`, then Spark for the
    rest) and without it (Spark for every line) give the same rows, column for column."""
    from fitness_assets.pipelines.bronze import LINES_SCHEMA, _Batch, _parse_lines
    from fitness_assets.tables import KAFKA_MULTIPLEX_BZ

    lines = _landing_lines(tmp_path)
    read = _Batch(lines=[pa.table({"source_file": [f"kafka_multiplex/part-{n % 3}.json" for n in range(len(lines))],
                                   "line": list(range(1, len(lines) + 1)), "raw": lines}, schema=LINES_SCHEMA)])
    table = calendar.toArrow()
    taken_by_plain: list[int] = []
    refused_by_plain: list[int] = []

    def plain(raws):
        decided = kafka_arrow.plain_lines(raws, table)
        taken_by_plain.extend(decided.taken)
        refused_by_plain.extend(decided.refused)
        return decided

    def parse(frame):
        return parsers.parse_kafka_multiplex(frame, calendar)

    def rows(data: pa.Table) -> Counter:
        """Usable lines whole; refused lines by what their quarantine row keeps."""
        kept = ("source_file", "line", "raw", "reason")
        return Counter(tuple(v for k, v in r.items() if r["reason"] is None or k in kept) for r in data.to_pylist())

    both = _parse_lines(spark, KAFKA_MULTIPLEX_BZ, parse, read, plain)
    spark_only = _parse_lines(spark, KAFKA_MULTIPLEX_BZ, parse, read, None)
    assert both.schema == spark_only.schema
    assert both.num_rows == spark_only.num_rows == len(lines)
    only_plain, only_spark = rows(both) - rows(spark_only), rows(spark_only) - rows(both)
    assert not only_plain and not only_spark, (
        f"with the pre-pass only: {list(only_plain)[:4]}; Spark alone only: {list(only_spark)[:4]}")
    # Many lines are plain (the simulated chain): usable, or refused for several reasons; and
    # Spark still decides the other lines, accepting some and refusing others.
    reasons = both.column("reason").to_pylist()
    n_taken, n_refused = len(taken_by_plain), len(refused_by_plain)
    assert n_taken > 1000 and n_refused > 20
    assert reasons[:n_taken] == [None] * n_taken and all(reasons[n_taken:n_taken + n_refused])
    assert len({r.split(":")[0] for r in reasons[n_taken:n_taken + n_refused]}) >= 3
    by_spark = reasons[n_taken + n_refused:]
    assert by_spark.count(None) > 0 and len({r.split(":")[0] for r in by_spark if r}) >= 3


def test_compact_lines_are_decided_by_arrow_as_python_decides_them_one_by_one(calendar, tmp_path):
    """The Arrow fast path for compact heart-rate lines changes nothing: `plain_lines` takes and
    refuses the same lines, with the same bronze columns and reasons, as the one-by-one Python
    decision, however the lines are chunked; it decides most simulated lines, and leaves each edge it cannot be sure
    of to the general path."""
    lines = _landing_lines(tmp_path)
    table = calendar.toArrow()
    expected_taken, expected_rows, expected_refused, expected_reasons = kafka_arrow._plain_python(lines, table)
    for chunks in (1, 3, 17):
        size = -(-len(lines) // chunks)
        chunked = pa.chunked_array([pa.array(lines[i:i + size], pa.string()) for i in range(0, len(lines), size)])
        decided = kafka_arrow.plain_lines(chunked, table)
        order = np.argsort(decided.taken)
        assert decided.taken[order].tolist() == expected_taken
        assert decided.rows.schema == expected_rows.schema
        assert decided.rows.take(pa.array(order)).to_pylist() == expected_rows.to_pylist()
        assert decided.refused.tolist() == expected_refused and decided.reasons.to_pylist() == expected_reasons
    compact, _ = kafka_arrow.compact_bpm_lines(pa.chunked_array([pa.array(lines, pa.string())]), table)
    assert compact.sum() > 500 and set(np.flatnonzero(compact).tolist()) <= set(expected_taken)
    by_line = dict(zip(lines, compact.tolist(), strict=False))
    assert by_line[_compact(time=_iso("2023-02-28T23:59:59Z"))] and by_line[_compact(key="null")]
    assert not any(by_line[_compact(time=_iso(day))] for day in ("2024-02-29T00:00:00Z", "2023-03-31T00:00:00Z"))
    assert _compact(time=_iso("2024-02-29T00:00:00Z")) in {lines[i] for i in expected_taken}


def test_a_deeply_nested_payload_is_decided_the_same_however_deep_the_caller_is():
    """Python's parsers recurse per level of nesting: under its default recursion limit a
    payload ~450 levels deep was read or refused depending on the caller's own depth (a Dagster
    step runs ~150 frames deeper than a test). Jackson's limit (1000 levels) decides, anywhere."""
    from fitness_assets.transforms.kafka_arrow import payload_problem

    def at_depth(frames: int, text: str):
        return payload_problem("bpm", text) if frames == 0 else at_depth(frames - 1, text)

    for quote in ('"', "'"):
        head = f"{quote}device_id{quote}: 11, {quote}time{quote}: 1678095183, {quote}x{quote}: "
        within, past = ("{" + head + "[" * n + "]" * n + "}" for n in (999, 1000))
        assert {at_depth(frames, within) for frames in (0, 300, 900)} == {None}
        assert {at_depth(frames, past) for frames in (0, 300, 900)} == {"malformed_payload"}
