"""Unit tests of the silver rules on hand-written rows (real Spark)."""

import datetime as dt
import itertools
import json

from pyspark.sql import functions as F

from fitness_assets.transforms import silver as T

T0 = 1678095000  # 2023-03-06 09:30:00 UTC


def _kafka(spark, records):
    """Bronze rows of ``(topic, payload, partition, offset[, landing file])``."""
    rows = [(None, json.dumps(v), topic, p, o, T0 * 1000, f"kafka_multiplex/{(file or ['k.json'])[0]}")
            for topic, v, p, o, *file in records]
    return spark.createDataFrame(rows, "key string, value string, topic string, partition long, offset long, "
                                       "timestamp long, source_file string")


def _profile(uid, kind, ts, city=None, dob="01/15/1990"):
    return {"user_id": uid, "update_type": kind, "timestamp": ts, "dob": dob, "gender": "F",
            "address": {"city": city, "state": "WA", "zip": 98101}}


def test_cdc_latest_change_wins_ties_by_offset_and_deletes_remove(spark):
    kafka = _kafka(spark, [
        ("user_info", _profile(1, "update", T0 + 20, "Late"), 0, 5),   # arrives first, is newest
        ("user_info", _profile(1, "new", T0, "First"), 0, 1),
        ("user_info", _profile(2, "new", T0, "A"), 1, 1),
        ("user_info", _profile(2, "update", T0 + 10, "Tie-low"), 1, 2),
        ("user_info", _profile(2, "update", T0 + 10, "Tie-high"), 1, 3),
        ("user_info", _profile(3, "new", T0, "Gone"), 2, 1),
        ("user_info", {"user_id": 3, "update_type": "delete", "timestamp": T0 + 30}, 2, 2),
    ])
    history = T.profile_history(T.profile_changes(kafka))
    current = {r["user_id"]: r for r in T.current_profiles(history).collect()}
    assert current[1]["city"] == "Late" and not current[1]["is_deleted"]
    assert current[2]["city"] == "Tie-high"
    assert current[3]["is_deleted"] and current[3]["gender"] == "F"  # a delete keeps the last known values...
    assert current[3]["city"] is None and current[3]["dob"] is None  # ...except the personal ones
    versions = sorted((r["user_id"], r["valid_from"], r["valid_to"], r["is_current"]) for r in history.collect())
    assert [v[0] for v in versions] == [1, 1, 2, 2, 3, 3]
    assert versions[0][2] == versions[1][1]  # valid_to of a version is valid_from of the next
    assert [v[3] for v in versions] == [False, True, False, True, False, True]


def test_gym_logs_keep_the_latest_logout(spark):
    rows = [("aa:bb:cc:dd:ee:01", 1, 100.0, None), ("aa:bb:cc:dd:ee:01", 1, 100.0, 400.0),
            ("aa:bb:cc:dd:ee:01", 1, 100.0, None)]
    logs = T.gym_logs(spark.createDataFrame(rows, "mac_address string, gym long, login double, logout double"))
    (row,) = logs.collect()
    assert row["logout"] == dt.datetime(1970, 1, 1, 0, 6, 40)


def test_completed_workouts_need_a_stop_within_three_hours(spark):
    t = dt.datetime(2023, 3, 6, 10)
    h = dt.timedelta(hours=1)
    events = spark.createDataFrame([
        (1, 1, t, "start", 1), (1, 1, t + h, "stop", 1),          # completed
        (1, 2, t, "start", 2), (1, 2, t + 3 * h, "stop", 2),      # exactly 3 h: completed
        (1, 3, t, "start", 3), (1, 3, t + 4 * h, "stop", 3),      # too long
        (1, 4, t, "start", 4),                                     # no stop yet
        (1, 5, t, "stop", 5), (1, 5, t + h, "start", 5),          # stop before start
    ], "user_id int, workout_id int, time timestamp, action string, session_id int")
    assert sorted(r["workout_id"] for r in T.completed_workouts(events).collect()) == [1, 2]


def test_age_bins_at_the_reference_date(spark):
    ref = dt.date(2024, 3, 6)
    dobs = [dt.date(2006, 3, 7), dt.date(2006, 3, 6), dt.date(1999, 3, 6), dt.date(1929, 3, 6),
            dt.date(1929, 3, 7), None]
    df = spark.createDataFrame([(d,) for d in dobs], "dob date")
    bins = [r[0] for r in df.select(T.age_bin(df["dob"], ref)).collect()]
    assert bins == ["under 18", "18-25", "25-35", "95+", "85-95", "invalid age"]


def test_nan_and_infinite_heart_rates_are_never_valid_readings(spark):
    kafka = _kafka(spark, [
        ("bpm", {"device_id": 1, "time": T0, "heartrate": "NaN"}, 0, 1),
        ("bpm", {"device_id": 1, "time": T0 + 1, "heartrate": "Infinity"}, 0, 2),
        ("bpm", {"device_id": 1, "time": T0 + 2, "heartrate": 1e300}, 0, 3),
        ("bpm", {"device_id": 1, "time": T0 + 3, "heartrate": 72}, 0, 4),
    ])
    valid = {r["time"].second: r["valid"] for r in T.heart_rate(kafka).collect()}
    assert valid == {0: False, 1: False, 2: False, 3: True}


def test_member_ids_above_2_31_flow_through_workout_bpm_and_gold(spark):
    from fitness_assets.transforms import gold as G

    big = 3_000_000_000
    t = dt.datetime(2023, 3, 6, 10)
    completed = spark.createDataFrame([(big, 1, 1, t, t + dt.timedelta(hours=1))],
                                      "user_id long, workout_id int, session_id int, start_time timestamp, "
                                      "end_time timestamp")
    members = spark.createDataFrame([(big, 11, "aa:bb:cc:dd:ee:01", t)],
                                    "user_id long, device_id long, mac_address string, registration_timestamp timestamp")
    readings = spark.createDataFrame([(11, t + dt.timedelta(minutes=5), 90.0, True)],
                                     "device_id long, time timestamp, heartrate double, valid boolean")
    bpm = T.workout_bpm(completed, members, readings)
    bins = spark.createDataFrame([(big, "25-35", "F", "Seattle", "WA")],
                                 "user_id long, age string, gender string, city string, state string")
    (summary,) = G.workout_bpm_summary(bpm, bins).collect()
    assert (summary["user_id"], summary["num_recordings"], summary["age"]) == (big, 1, "25-35")
    visits = spark.createDataFrame([("aa:bb:cc:dd:ee:01", 2, t - dt.timedelta(minutes=5), t + dt.timedelta(hours=2))],
                                   "mac_address string, gym long, login timestamp, logout timestamp")
    (visit,) = G.gym_summary(visits, members, completed).collect()
    assert visit["minutes_exercising"] == 60.0


def test_a_complete_tie_goes_to_the_later_file_whatever_the_order_rows_come_in(spark):
    """Two records of one member with the same time, partition and offset (a file delivered
    again, corrected): the later file wins, and the same records give the same winner in any
    order, so a result does not depend on how the records were split into batches."""
    records = [("user_info", _profile(1, "update", T0 + 10, "First"), 1, 1, "k1.json"),
               ("user_info", _profile(1, "update", T0 + 10, "Corrected"), 1, 1, "k2.json"),
               ("user_info", _profile(2, "update", T0 + 10, "Same file A"), 1, 2, "k3.json"),
               ("user_info", _profile(2, "update", T0 + 10, "Same file B"), 1, 2, "k3.json")]
    winners = set()
    for ordered in itertools.permutations(records):
        changes = T.profile_changes(_kafka(spark, list(ordered)))
        winners.add(tuple(sorted((r["user_id"], r["city"]) for r in changes.collect())))
    assert winners == {((1, "Corrected"), (2, "Same file B"))}


def test_a_delete_erases_personal_data_from_every_earlier_version(spark):
    kafka = _kafka(spark, [
        ("user_info", _profile(1, "new", T0, "Old") | {"first_name": "Ann", "last_name": "Lee"}, 0, 1),
        ("user_info", _profile(1, "update", T0 + 10, "Mid"), 0, 2),
        ("user_info", {"user_id": 1, "update_type": "delete", "timestamp": T0 + 20}, 0, 3),
        ("user_info", _profile(1, "new", T0 + 30, "Back"), 0, 4),  # rejoins: the new data is kept
        ("user_info", _profile(2, "new", T0, "Kept") | {"first_name": "Bo"}, 0, 5),
    ])
    history = sorted(T.profile_history(T.profile_changes(kafka)).collect(), key=lambda r: (r["user_id"], r["valid_from"]))
    assert [(r["user_id"], r["is_deleted"], r["city"], r["dob"], r["first_name"]) for r in history] == [
        (1, False, None, None, None), (1, False, None, None, None), (1, True, None, None, None),
        (1, False, "Back", dt.date(1990, 1, 15), None), (2, False, "Kept", dt.date(1990, 1, 15), "Bo")]
    assert [r["gender"] for r in history] == ["F"] * 5  # not personal data: kept


def test_quarantined_profile_records_of_deleted_members_are_found_for_erasure(spark):
    def line(uid, topic="user_info"):
        return json.dumps({"key": "k", "value": json.dumps({"user_id": uid, "update_type": "merge",
                                                            "first_name": "Ann"}), "topic": topic})

    escaped = line(1).replace('"topic": "user_info"', '"topic": "user\\u005finfo"')  # still the topic
    assert json.loads(escaped)["topic"] == "user_info" and "user_info" not in escaped
    # Lines that are not one record still name the member: an array of records, a line cut
    # short, a user_id written as a string; other members' lines and longer ids are kept.
    array, cut = "[" + line(2) + ", " + line(1) + "]", line(1)[:-30]
    as_string = line(1).replace('\\"user_id\\": 1', '\\"user_id\\": \\"1\\"')
    assert json.loads(json.loads(as_string)["value"])["user_id"] == "1"
    quarantine = spark.createDataFrame(
        [("f", 1, line(1), "invalid_value:update_type"), ("f", 2, line(2), "invalid_value:update_type"),
         ("f", 3, line(1, "workout"), "missing_field:workout_id"), ("f", 4, None, "unreadable_file:binary"),
         ("f", 5, escaped, "invalid_value:update_type"), ("g", 1, array, "malformed_json"),
         ("g", 2, cut, "malformed_json"), ("g", 3, "[" + line(2) + "]", "malformed_json"),
         ("g", 4, line(10), "invalid_value:update_type"), ("g", 5, as_string, "wrong_type:user_id"),
         ("g", 6, line(10**30).replace(str(10**30), "1" + "0" * 30), "malformed_json"),
         ("g", 7, json.dumps({"key": "k", "value": json.dumps({"user_id": 1, "workout_id": 3}), "topic": "workout"}),
          "missing_field:session_id")],
        "source_file string, line long, raw string, reason string").withColumn("load_time", F.current_timestamp())
    members = spark.createDataFrame([(1,)], "user_id long")
    rows = T.erased_quarantine_rows(quarantine, members).collect()
    # f/3 is a workout record, but holds the member's first name: erased too. A workout line
    # with no personal field (g/7) is kept, as the member's workouts are.
    assert sorted((r["source_file"], r["line"], r["raw"]) for r in rows) == [
        ("f", 1, None), ("f", 3, None), ("f", 5, None), ("g", 1, None), ("g", 2, None), ("g", 5, None)]
