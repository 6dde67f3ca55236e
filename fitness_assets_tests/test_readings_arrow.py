"""Heart-rate payloads decoded by Arrow (transforms.readings_arrow) against Spark's decoder
(transforms.silver.bpm_readings): every payload Arrow takes must give Spark's reading exactly,
and the payloads whose exactness the Arrow path cannot vouch for must be left to Spark. Then the
per-instant rule on Arrow against the rule on Spark, and the refresh, which uses both."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa

from fitness_assets.lakehouse import incremental as inc
from fitness_assets.lakehouse.spark import arrow_frame
from fitness_assets.pipelines import silver as pipeline
from fitness_assets.tables import HEART_RATE, KAFKA_MULTIPLEX_BZ
from fitness_assets.transforms import readings_arrow as A
from fitness_assets.transforms import silver as T


def _payload(device: object, time: str, heartrate: str) -> str:
    return f'{{"device_id":{device},"time":{time},"heartrate":{heartrate}}}'


#: Compact payloads at the edges of what the Arrow decoder takes: each must be taken.
TAKEN = [
    ("0", "0", "null"), ("999999999999999999", "1678450161.25", "72"), ("1", "3999999999.999999", "0"),
    ("2", "3999999999", "0.0"), ("3", "1678450161.000001", "999999999.999999999999"),
    ("4", "0.5", "-0.000000000001"), ("5", "1678450161.5", "-12.5"), ("6", "1678450161.999999", "0.1"),
    ("7", '"2024-02-29T23:59:59.999999Z"', "144.9"), ("8", '"1900-01-01T00:00:00Z"', "60"),
    ("9", '"2999-12-31T23:59:59.5Z"', "61.25"), ("10", '"2023-04-30T00:00:00.1Z"', "1.797693134862"),
    ("11", "1678450161.123456", "123456789.123456789012"), ("12", '"2023-03-10T12:00:00.25Z"', "0.300000000001"),
]
#: Payloads the Arrow decoder must leave to Spark (a form it does not vouch for).
LEFT = [
    ("20", "1678450161.1234565", "72"),  # 7 fraction digits: Spark rounds the double's text
    ("21", "4294967296.5", "72"), ("22", "99999999999", "72"),  # at and above 2^32 seconds
    ("23", "-1", "72"), ("24", "1e9", "72"), ("25", "1678450161", "-0.0"), ("26", "1678450161", "-0"),
    ("27", "1678450161", "1e2"), ("28", "1678450161", "NaN"), ("29", "1678450161", '"72"'),
    ("30", '"2023-02-29T00:00:00Z"', "72"), ("31", '"2023-04-31T00:00:00Z"', "72"),
    ("32", '"2023-03-10T12:00:00.1234567Z"', "72"), ("33", '"2023-03-10T12:00:00+01:00"', "72"),
    ("34", '"2023-03-10 12:00:00Z"', "72"), ("35", '"1899-12-31T23:59:59Z"', "72"), ("36", '"3000-01-01T00:00:00Z"', "72"),
    ("037", "1678450161", "72"), ("38", "1678450161", "1234567890"), ("39", "1678450161", "1.1234567890123"),
    ("40", '"2023-03-10T24:00:00Z"', "72"), ("-41", "1678450161", "72"), ("1000000000000000000", "1678450161", "72"),
]


FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1).toordinal(), dt.date(2999, 12, 31).toordinal()


def _random_compact(rng: random.Random, device: int) -> str:
    """A random compact payload (all of them must be taken), with its device id unique."""
    if rng.random() < 0.3:
        day = dt.date.fromordinal(rng.randint(FIRST_DAY, LAST_DAY)).isoformat()
        fraction = "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6))) if rng.random() < 0.7 else ""
        time = f'"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{fraction}Z"'
    else:
        whole = str(rng.choice([rng.randint(0, 999), rng.randint(10**9, 4 * 10**9 - 1), rng.randint(1, 10**9 - 1)]))
        time = whole + ("." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6))) if rng.random() < 0.6 else "")
    if rng.random() < 0.05:
        heartrate = "null"
    else:
        whole = str(rng.choice([rng.randint(0, 250), rng.randint(0, 999_999_999)]))
        digits = rng.randint(0, 12)
        fraction = "." + "".join(rng.choice("0123456789") for _ in range(digits)) if digits else ""
        heartrate = ("-" if rng.random() < 0.1 and whole != "0" else "") + whole + fraction
    return _payload(device, time, heartrate)


def _spark_readings(spark, payloads: list[str]) -> list[tuple]:
    frame = arrow_frame(spark, pa.table({"value": pa.array(payloads, pa.string())}))
    rows = T.bpm_readings(frame).toArrow().cast(A.READINGS_SCHEMA)
    return sorted(zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True),
                  key=lambda r: (r[0] is None, r[0] or 0))


def _arrow_readings(table: pa.Table) -> list[tuple]:
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True), key=lambda r: r[0])


def test_every_payload_arrow_takes_decodes_as_spark_decodes_it_and_the_others_are_left_to_spark(spark):
    rng = random.Random(20261206)
    taken = [_payload(*case) for case in TAKEN] + [_random_compact(rng, 100 + n) for n in range(3000)]
    left = [_payload(*case) for case in LEFT]
    payloads = taken + left
    rng.shuffle(payloads)
    mask, readings = A.compact_readings(pa.chunked_array([pa.array(payloads[:1000]), pa.array(payloads[1000:])]))

    by_payload = dict(zip(payloads, mask.tolist(), strict=True))
    assert [p for p in taken if not by_payload[p]] == [], [p for p in taken if not by_payload[p]]
    assert [p for p in left if by_payload[p]] == []
    assert readings.schema == A.READINGS_SCHEMA
    assert _arrow_readings(readings) == _spark_readings(spark, taken)
    # Spark gives some of the left payloads no time or no heart rate: a decoder that took them
    # would have to agree with that too, which these cases are there to catch.
    assert any(r[1] is None for r in _spark_readings(spark, left))


def test_the_per_instant_rule_on_arrow_is_the_rule_on_spark(spark):
    payloads = [_payload(d, t, h) for d, t, h in [
        (1, "1678450161", "72"), (1, "1678450161", "80.5"), (1, '"2023-03-10T12:09:21Z"', "75"),  # one instant
        (1, "1678450162", "null"), (1, "1678450162", "-3"),  # the highest is negative: not valid
        (2, "1678450161", "null"), (2, "1678450161.5", "0"), (3, "1678450161", "61"),
    ]]
    mask, readings = A.compact_readings(pa.array(payloads))
    assert mask.all()
    arrow = A.per_instant(readings)
    frame = arrow_frame(spark, pa.table({"value": pa.array(payloads), "topic": pa.array(["bpm"] * len(payloads)),
                                         "partition": pa.array([0] * len(payloads), pa.int64()),
                                         "offset": pa.array(range(len(payloads)), pa.int64()),
                                         "timestamp": pa.array([0] * len(payloads), pa.int64())}))
    on_spark = T.heart_rate(frame).toArrow()
    key = [("device_id", "ascending"), ("time", "ascending")]
    assert arrow.sort_by(key).to_pylist() == on_spark.cast(arrow.schema).sort_by(key).to_pylist()
    assert len(arrow) == 5


def test_the_heart_rate_refresh_mixes_both_decoders_and_keeps_the_highest_reading(store, spark):
    """Payloads of one instant arriving in both forms (one decoded by Arrow, one by Spark) and
    across two bronze appends end as one row with the highest heart rate."""
    def bronze(rows: list[tuple[str, int]]) -> pa.Table:
        return pa.table({
            "key": pa.nulls(len(rows), pa.string()), "value": [v for v, _ in rows], "topic": ["bpm"] * len(rows),
            "partition": pa.array([0] * len(rows), pa.int64()), "offset": pa.array([o for _, o in rows], pa.int64()),
            "timestamp": pa.array([1678450161000] * len(rows), pa.int64()),
            "date": pa.array([None] * len(rows), pa.date32()), "week_part": pa.nulls(len(rows), pa.string()),
            "load_time": pa.array([0] * len(rows), pa.timestamp("us", tz="UTC")), "source_file": ["f"] * len(rows),
        }).cast(KAFKA_MULTIPLEX_BZ.schema)
    store.ensure(KAFKA_MULTIPLEX_BZ)
    store.append(KAFKA_MULTIPLEX_BZ, bronze([(_payload(1, "1678450161", "72"), 0),
                                             (_payload(1, "1678450161", "1e2"), 1),  # Spark's: 100
                                             (_payload(2, "1678450161", "60"), 2)]))
    pipeline.heart_rate(store)
    store.append(KAFKA_MULTIPLEX_BZ, bronze([(_payload(2, '"2023-03-10T12:09:21.0Z"', "65"), 3),
                                             (_payload(2, '"2023-03-10T12:09:21+00:00"', "61"), 4)]))
    result = pipeline.heart_rate(store)
    assert not result.skipped
    rows = sorted((r["device_id"], r["heartrate"], r["valid"]) for r in store.read(HEART_RATE).collect())
    assert rows == [(1, 100.0, True), (2, 65.0, True)]
    assert inc.plan(store, HEART_RATE, [KAFKA_MULTIPLEX_BZ]).is_empty
