"""Unit tests of the silver rules on hand-written rows (real Spark)."""

import datetime as dt
import json

from fitness_assets.transforms import silver as T

T0 = 1678095000  # 2023-03-06 09:30:00 UTC


def _kafka(spark, records):
    rows = [(None, json.dumps(v), topic, p, o, T0 * 1000) for topic, v, p, o in records]
    return spark.createDataFrame(rows, "key string, value string, topic string, partition long, offset long, "
                                       "timestamp long")


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
    assert current[3]["is_deleted"] and current[3]["city"] == "Gone"  # a delete keeps the last known values
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
