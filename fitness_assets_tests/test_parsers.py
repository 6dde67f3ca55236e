"""Unit tests of the landing parsers on hand-written lines (real Spark)."""

import datetime as dt

import pytest

from fitness_assets.transforms import bronze
from fitness_assets.transforms.reference import date_lookup

UTC = dt.UTC


def _lines(spark, raws, source_file="src/f.csv"):
    return spark.createDataFrame([(source_file, i + 1, r) for i, r in enumerate(raws)], "source_file string, line long, raw string")


def _by_line(df):
    return {r["line"]: r.asDict() for r in df.collect()}


def test_registered_users_reasons_and_types(spark):
    rows = _by_line(bronze.parse_registered_users(_lines(spark, [
        "user_id,device_id,mac_address,registration_timestamp",
        "1,11,AA:bb:cc:dd:ee:01,1678095123.25",
        "x,13,aa:bb:cc:dd:ee:03,1",
        "3,14,zz:zz,5",
        "4,15",
        "5,,aa:bb:cc:dd:ee:05,1",
        "6,16,aa:bb:cc:dd:ee:06,soon",
    ])))
    assert rows[2]["reason"] is None
    assert rows[2]["mac_address"] == "aa:bb:cc:dd:ee:01"
    assert rows[2]["registration_timestamp"] == 1678095123.25
    assert [rows[i]["reason"] for i in range(3, 8)] == [
        "wrong_type:user_id", "invalid_value:mac_address", "malformed_csv", "missing_field:device_id",
        "wrong_type:registration_timestamp",
    ]
    assert 1 not in rows  # the header is not data


def test_gym_logins_by_header_order_and_empty_logout(spark):
    rows = _by_line(bronze.parse_gym_logins(_lines(spark, [
        "gym,login,logout,mac_address",
        "2,1678100000,,aa:bb:cc:dd:ee:01",
        "2,1678100000,1678103600.5,aa:bb:cc:dd:ee:01",
        "2,1678100000,later,aa:bb:cc:dd:ee:01",
        "2,,,aa:bb:cc:dd:ee:01",
    ])))
    assert rows[2] | {"raw": None} == {"mac_address": "aa:bb:cc:dd:ee:01", "gym": 2, "login": 1678100000.0,
                                       "logout": None, "source_file": "src/f.csv", "line": 2, "raw": None,
                                       "reason": None}
    assert rows[3]["logout"] == 1678103600.5
    assert rows[4]["reason"] == "wrong_type:logout"
    assert rows[5]["reason"] == "missing_field:login"


def test_csv_headers_and_mac_addresses_are_read_in_any_case(spark):
    """Headers match their columns and MAC addresses are stored in any letter case (lowered
    as ASCII: the header names and a valid MAC address hold nothing else)."""
    rows = _by_line(bronze.parse_gym_logins(_lines(spark, [
        '"MAC_Address",GYM,Login,LOGOUT',
        "AA:BB:CC:DD:EE:0F,3,1678100000,1678103600",
        "aa:bb:cc:dd:ee:ÄF,3,1678100000,1678103600",
    ])))
    assert rows[2]["reason"] is None
    assert (rows[2]["mac_address"], rows[2]["gym"]) == ("aa:bb:cc:dd:ee:0f", 3)
    assert rows[3]["reason"] == "invalid_value:mac_address"


def _kafka(topic, value, ts=1678100100000, partition=0, offset=1):
    import json

    return json.dumps({"key": "k", "value": json.dumps(value) if not isinstance(value, str) else value,
                       "topic": topic, "partition": partition, "offset": offset, "timestamp": ts})


@pytest.fixture(scope="module")
def calendar(spark):
    return date_lookup(spark, dt.date(2023, 1, 1), dt.date(2023, 12, 31))


def test_kafka_outer_and_payload_reasons(spark, calendar):
    good_bpm = {"device_id": 11, "time": 1678100101.25, "heartrate": 99.5}
    raws = [
        _kafka("bpm", good_bpm),
        _kafka("bpm", good_bpm, ts=1678100100),  # seconds, not ms
        '{"key": "k", "value":',
        _kafka("nope", good_bpm),
        _kafka("bpm", "not json"),
        _kafka("bpm", {"device_id": 11, "time": "yesterday", "heartrate": 1}),
        _kafka("bpm", {"device_id": 11, "time": "2023-03-06T10:15:02.5Z", "heartrate": None}),
        _kafka("bpm", {"device_id": 11, "time": 1678100101, "heartrate": "fast"}),
        _kafka("workout", {"user_id": 1, "workout_id": 2, "timestamp": 1678100100, "action": "jump", "session_id": 3}),
        _kafka("workout", {"user_id": 1, "workout_id": 2, "timestamp": 1678100100, "action": "start"}),
        _kafka("user_info", {"user_id": 1, "update_type": "merge", "timestamp": 1}),
        _kafka("user_info", {"user_id": 1, "update_type": "new", "timestamp": 1, "dob": "1990-01-01"}),
        '{"key": null, "value": "{}", "topic": "bpm", "partition": "x", "offset": 1, "timestamp": 1}',
    ]
    rows = _by_line(bronze.parse_kafka_multiplex(_lines(spark, raws, "kafka_multiplex/f.json"), calendar))
    assert rows[1]["reason"] is None and rows[1]["timestamp"] == 1678100100000
    assert rows[1]["date"] == dt.date(2023, 3, 6) and rows[1]["week_part"] == "2023-10"
    assert rows[2]["reason"] is None and rows[2]["timestamp"] == 1678100100000
    assert rows[7]["reason"] is None  # ISO time and a NULL heart rate are valid records
    assert {i: rows[i]["reason"] for i in (3, 4, 5, 6, 8, 9, 10, 11, 12, 13)} == {
        3: "malformed_json", 4: "invalid_value:topic", 5: "malformed_payload", 6: "wrong_type:time",
        8: "wrong_type:heartrate", 9: "invalid_value:action", 10: "missing_field:session_id",
        11: "invalid_value:update_type", 12: "invalid_value:dob", 13: "wrong_type:partition",
    }


def test_payload_decoding_keeps_exact_instants(spark, calendar):
    raws = [
        _kafka("bpm", {"device_id": 11, "time": 1678100101.123456, "heartrate": 99.5}),
        _kafka("bpm", {"device_id": 11, "time": "2023-03-06T10:15:02.5Z", "heartrate": 80}),
        _kafka("user_info", {"user_id": 7, "update_type": "new", "timestamp": 1678095123.5, "dob": "03/06/1990",
                             "address": {"street_address": "1 Main", "city": "Springfield", "state": "IL", "zip": 62701}}),
    ]
    parsed = bronze.parse_kafka_multiplex(_lines(spark, raws, "kafka_multiplex/f.json"), calendar)
    bpm = bronze.decode_kafka(parsed, "bpm").orderBy("time").collect()
    assert [r["time"] for r in bpm] == [
        dt.datetime(2023, 3, 6, 10, 15, 2, 500000), dt.datetime(2023, 3, 6, 10, 55, 1, 123456)]
    profile = bronze.decode_kafka(parsed, "user_info").first()
    assert profile["updated"] == dt.datetime(2023, 3, 6, 9, 32, 3, 500000)
    assert profile["dob"] == dt.date(1990, 3, 6)
    assert (profile["city"], profile["zip"]) == ("Springfield", 62701)


def test_out_of_range_numbers_become_null_instead_of_raising(spark):
    from fitness_assets.transforms import parsing as P

    values = ["1e17", "1e300", "NaN", "Infinity", "-1e12", "1678100101.5"]
    df = spark.createDataFrame([(v,) for v in values], "v string")
    rows = df.select(P.epoch_seconds_to_timestamp(df["v"]).alias("ts"), P.instant_to_timestamp(df["v"]).alias("i"),
                     P.kafka_timestamp_ms(df["v"]).alias("ms"), P.heartrate(df["v"]).alias("hr")).collect()
    assert [r["ts"] for r in rows[:5]] == [None] * 5 and [r["i"] for r in rows[:5]] == [None] * 5
    assert rows[5]["ts"] == dt.datetime(2023, 3, 6, 10, 55, 1, 500000)
    assert [r["ms"] for r in rows] == [None, None, None, None, None, 1678100101500]
    big_ms = spark.createDataFrame([("10000000000000000",)], "v string")
    assert big_ms.select(P.kafka_timestamp_ms(big_ms["v"])).first()[0] is None
    assert [r["hr"] for r in rows] == [None, None, None, None, None, 1678100101.5]


def test_poison_values_are_quarantined_with_invalid_value(spark, calendar):
    users = _by_line(bronze.parse_registered_users(_lines(spark, [
        "user_id,device_id,mac_address,registration_timestamp",
        "1,11,aa:bb:cc:dd:ee:01,NaN", "2,11,aa:bb:cc:dd:ee:01,Infinity", "3,11,aa:bb:cc:dd:ee:01,1e300",
        "4,11,aa:bb:cc:dd:ee:01,1e17", "3000000000,11,aa:bb:cc:dd:ee:01,1678095123",
    ])))
    assert [users[i]["reason"] for i in range(2, 6)] == ["invalid_value:registration_timestamp"] * 4
    assert users[6]["reason"] is None and users[6]["user_id"] == 3_000_000_000
    logins = _by_line(bronze.parse_gym_logins(_lines(spark, [
        "mac_address,gym,login,logout", "aa:bb:cc:dd:ee:01,1,1e17,", "aa:bb:cc:dd:ee:01,1,1678100000,NaN"])))
    assert [logins[2]["reason"], logins[3]["reason"]] == ["invalid_value:login", "invalid_value:logout"]
    bpm = {"device_id": 11, "time": 1678100101, "heartrate": 80}
    raws = [
        _kafka("bpm", bpm, ts=10**16),
        _kafka("bpm", bpm | {"time": 1e17}),
        _kafka("bpm", bpm | {"heartrate": "Infinity"}),
        _kafka("bpm", bpm | {"heartrate": 1e300}),
        _kafka("bpm", bpm | {"heartrate": "NaN"}),
        _kafka("workout", {"user_id": 3_000_000_000, "workout_id": 2, "timestamp": 1678100100, "action": "start",
                           "session_id": 3}),
        _kafka("user_info", {"user_id": 1, "update_type": "new", "timestamp": "NaN"}),
    ]
    rows = _by_line(bronze.parse_kafka_multiplex(_lines(spark, raws, "kafka_multiplex/f.json"), calendar))
    assert [rows[i]["reason"] for i in range(1, 8)] == [
        "invalid_value:timestamp", "invalid_value:time", "invalid_value:heartrate", "invalid_value:heartrate",
        "invalid_value:heartrate", None, "invalid_value:timestamp"]
