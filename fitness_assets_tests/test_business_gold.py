"""The business gold tables (gym occupancy, member engagement, workout performance): their
rules on a small hand-made example, incremental refresh against a full recompute, every check
failing on corrupted data, no personal data in gold, the picture overview, and the numbers of
a simulated chain against the separate plain-Python implementation (real Spark, real Delta)."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from fitness_assets.assets.checks_lib import evaluate_checks
from fitness_assets.assets.gold.business import at_risk_days, business_assets, business_checks
from fitness_assets.lakehouse.store import Clause, Merge
from fitness_assets.pipelines import business as P
from fitness_assets.pipelines import gold as G
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.simulator import SimulatorConfig
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GOLD_TABLES,
    GYM_LOGS,
    GYM_OCCUPANCY,
    MEMBER_ENGAGEMENT,
    PERSONAL_FIELDS,
    USER_BINS,
    USER_PROFILE,
    USERS,
    WORKOUT_BPM,
    WORKOUT_PERFORMANCE,
    WORKOUT_ZONES,
)
from fitness_assets_tests.helpers import deliver, spark_reads, stage, table_rows
from fitness_assets_tests.reference_impl import expected_gold

BUSINESS = (GYM_OCCUPANCY, MEMBER_ENGAGEMENT, WORKOUT_ZONES, WORKOUT_PERFORMANCE)
REF = dt.date(2024, 1, 10)
MAC1, MAC2, STRANGER = "aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:99"

pytestmark = pytest.mark.connect  # all of it runs on Spark Connect too (make test): about 1.5 minutes


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _append(store, spec, rows):
    store.append(spec, pa.Table.from_pylist(rows, schema=spec.schema))


def build_example(store) -> None:
    """Member 1 trained four days in a row in December and stopped; member 2 is active on the
    reference date (a visit across midnight, one without a logout, one of 48 h); member 3
    only has a workout (no registration); an unknown badge visits once."""
    _append(store, USERS, [
        {"user_id": 1, "device_id": 11, "mac_address": MAC1, "registration_timestamp": t("2023-12-01T00:00:00")},
        {"user_id": 2, "device_id": 12, "mac_address": MAC2, "registration_timestamp": t("2023-12-01T00:00:00")}])
    visits = [{"mac_address": MAC1, "gym": 1, "login": t(f"2023-12-{d}T10:30:00"), "logout": t(f"2023-12-{d}T12:00:00")}
              for d in (18, 19, 20, 21)]
    visits += [
        {"mac_address": MAC2, "gym": 1, "login": t("2024-01-09T23:30:00"), "logout": t("2024-01-10T00:30:00")},
        {"mac_address": MAC2, "gym": 1, "login": t("2024-01-10T08:00:00"), "logout": None},
        {"mac_address": MAC2, "gym": 1, "login": t("2024-01-10T09:00:00"), "logout": t("2024-01-12T09:00:00")},
        {"mac_address": STRANGER, "gym": 1, "login": t("2024-01-10T08:15:00"), "logout": t("2024-01-10T08:45:00")}]
    _append(store, GYM_LOGS, visits)
    completed = [{"user_id": 1, "workout_id": d, "session_id": 1, "start_time": t(f"2023-12-{d}T10:40:00"),
                  "end_time": t(f"2023-12-{d}T11:00:00")} for d in (18, 19, 20, 21)]
    completed += [
        {"user_id": 2, "workout_id": 5, "session_id": 1, "start_time": t("2024-01-09T23:40:00"),
         "end_time": t("2024-01-10T00:10:00")},
        {"user_id": 3, "workout_id": 6, "session_id": 1, "start_time": t("2024-01-05T10:00:00"),
         "end_time": t("2024-01-05T10:30:00")}]
    _append(store, COMPLETED_WORKOUTS, completed)

    def reading(uid, wid, start, end, at, hr):
        return {"user_id": uid, "workout_id": wid, "session_id": 1, "start_time": t(start), "end_time": t(end),
                "time": t(at), "heartrate": hr}

    _append(store, WORKOUT_BPM, [
        reading(1, 18, "2023-12-18T10:40:00", "2023-12-18T11:00:00", "2023-12-18T10:41:00", 100.0),
        reading(1, 18, "2023-12-18T10:40:00", "2023-12-18T11:00:00", "2023-12-18T10:42:00", 150.0),
        reading(1, 18, "2023-12-18T10:40:00", "2023-12-18T11:00:00", "2023-12-18T10:43:00", 190.0),
        reading(2, 5, "2024-01-09T23:40:00", "2024-01-10T00:10:00", "2024-01-09T23:45:00", 120.0),
        reading(2, 5, "2024-01-09T23:40:00", "2024-01-10T00:10:00", "2024-01-09T23:50:00", 170.0)])
    profile = {c: None for c in USER_PROFILE.column_names}
    _append(store, USER_PROFILE, [profile | {"user_id": 1, "dob": dt.date(1984, 1, 15), "gender": "F",
                                             "updated": t("2023-12-01T00:00:00")}])
    _append(store, USER_BINS, [{"user_id": 1, "age": "35-45", "gender": "F", "city": None, "state": None}])


def refresh_all(store, reference=REF, days=14):
    G.workout_bpm_summary(store)
    G.gym_summary(store)
    P.gym_occupancy(store)
    P.member_engagement(store, reference, days)
    P.workout_zones(store)
    P.workout_performance(store)


def _by_key(store, spec):
    return {tuple(r[k] for k in spec.keys): r.asDict() for r in store.read(spec).collect()}


@pytest.mark.slow
def test_rules_on_a_hand_made_example(store):
    build_example(store)
    refresh_all(store)
    occupancy = _by_key(store, GYM_OCCUPANCY)
    # 10:30-12:00: in hours 10 and 11, not in 12 (a logout on the hour does not count in it).
    assert (1, dt.date(2023, 12, 20), 12) not in occupancy
    assert occupancy[(1, dt.date(2023, 12, 20), 10)]["member_minutes"] == 30.0
    assert occupancy[(1, dt.date(2023, 12, 20), 11)] | {} == {
        "gym": 1, "date": dt.date(2023, 12, 20), "hour": 11, "visitors": 1, "arrivals": 0, "unclosed_visits": 0,
        "member_minutes": 60.0, "is_peak_hour": False}
    # Across midnight: half an hour on each day.
    assert occupancy[(1, dt.date(2024, 1, 9), 23)]["member_minutes"] == 30.0
    assert occupancy[(1, dt.date(2024, 1, 10), 0)]["member_minutes"] == 30.0
    # 08:00 without a logout counts in its login hour only, beside the unknown badge.
    eight = occupancy[(1, dt.date(2024, 1, 10), 8)]
    assert (eight["visitors"], eight["arrivals"], eight["unclosed_visits"], eight["member_minutes"]) == (2, 2, 1, 30.0)
    assert eight["is_peak_hour"] and not occupancy[(1, dt.date(2024, 1, 10), 0)]["is_peak_hour"]
    # A 48-hour visit is not spread: login hour only, unclosed.
    assert occupancy[(1, dt.date(2024, 1, 10), 9)]["unclosed_visits"] == 1
    assert {k[2] for k in occupancy if k[1] == dt.date(2024, 1, 10)} == {0, 8, 9}

    engagement = _by_key(store, MEMBER_ENGAGEMENT)
    one, two, three = engagement[(1,)], engagement[(2,)], engagement[(3,)]
    assert (one["days_inactive"], one["workouts_before_lapse"], one["visits_30d"], one["visits_7d"]) == (20, 4, 4, 0)
    assert one["at_risk"] and one["last_visit"] == dt.datetime(2023, 12, 21, 10, 30)
    assert (two["days_inactive"], two["visits_7d"], two["workouts_7d"], two["at_risk"]) == (0, 3, 1, False)
    assert (three["last_visit"], three["days_inactive"], three["workouts_30d"], three["at_risk"]) == (None, 5, 1, False)
    assert {r["reference_date"] for r in engagement.values()} == {REF}

    performance = _by_key(store, WORKOUT_PERFORMANCE)
    week = int(dt.date(2023, 12, 18).strftime("%U"))
    p1 = performance[(1, 2023, week)]
    # Born 1984-01-15: 39 on 2023-12-18, max HR 181. 100 bpm = 55 % (zone 1), 150 = 83 % (zone 4),
    # 190 = 105 % (zone 5), each standing for the minute since the previous reading.
    assert [p1[f"zone{k}_minutes"] for k in range(1, 6)] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert (p1["workouts"], p1["minutes_exercising"], p1["readings"], p1["max_bpm"]) == (4, 80.0, 3, 190.0)
    assert p1["week_start"] == dt.date(2023, 12, 17) and p1["week_part"] == f"2023-{week}"
    assert abs(p1["avg_bpm"] - 440 / 3) < 1e-6
    p2 = performance[(2, 2024, 1)]
    assert p2["zone1_minutes"] is None and p2["readings"] == 2 and p2["avg_bpm"] == 145.0  # no profile: no zones
    assert performance[(3, 2024, 0)]["readings"] == 0 and performance[(3, 2024, 0)]["week_start"] == dt.date(2024, 1, 1)

    # Another threshold or reference date recomputes every member.
    P.member_engagement(store, REF, 21)
    assert not _by_key(store, MEMBER_ENGAGEMENT)[(1,)]["at_risk"]
    P.member_engagement(store, dt.date(2023, 12, 19), 21)
    early = _by_key(store, MEMBER_ENGAGEMENT)
    assert early[(1,)]["visits_7d"] == 2 and early[(2,)]["days_inactive"] is None
    assert store.latest_commit_metadata(MEMBER_ENGAGEMENT, "recomputed")["recomputed"] == "every member"
    version = store.version(MEMBER_ENGAGEMENT)
    assert P.member_engagement(store, dt.date(2023, 12, 19), 21).skipped  # same rules, nothing new
    assert store.version(MEMBER_ENGAGEMENT) == version


@pytest.mark.slow
def test_incremental_refresh_equals_a_full_recompute(store, tmp_path):
    build_example(store)
    refresh_all(store)
    # The open visit gets its logout, a late reading arrives, member 2's date of birth is learnt.
    store.merge(GYM_LOGS, pa.Table.from_pylist(
        [{"mac_address": MAC2, "gym": 1, "login": t("2024-01-10T08:00:00"), "logout": t("2024-01-10T10:20:00")}],
        schema=GYM_LOGS.schema), Merge("t.mac_address = s.mac_address AND t.gym = s.gym AND t.login = s.login",
                                       (Clause("update", None, {"logout": "s.logout"}),)))
    _append(store, WORKOUT_BPM, [{"user_id": 2, "workout_id": 5, "session_id": 1,
                                  "start_time": t("2024-01-09T23:40:00"), "end_time": t("2024-01-10T00:10:00"),
                                  "time": t("2024-01-10T00:05:00"), "heartrate": 175.0}])
    profile = {c: None for c in USER_PROFILE.column_names}
    _append(store, USER_PROFILE, [profile | {"user_id": 2, "dob": dt.date(2000, 6, 1), "updated": t("2024-01-01T00:00:00")}])
    refresh_all(store)
    incremental = {spec.name: table_rows(store, spec) for spec in BUSINESS}
    assert _by_key(store, GYM_OCCUPANCY)[(1, dt.date(2024, 1, 10), 10)]["member_minutes"] == 20.0
    assert _by_key(store, WORKOUT_PERFORMANCE)[(2, 2024, 1)]["zone1_minutes"] is not None
    for spec in BUSINESS:
        shutil.rmtree(store.location(spec))
    refresh_all(store)
    assert {spec.name: table_rows(store, spec) for spec in BUSINESS} == incremental


def test_a_profile_change_reaches_performance_through_the_date_of_birth_and_summaries_through_the_bins(store):
    """A new city changes the bins of member 1's workout summaries (re-binned from the stored
    summaries) and none of their weekly performance; a new date of birth changes the zones,
    and every table equals a recompute from scratch."""
    from fitness_assets.tables import WORKOUT_BPM_SUMMARY

    build_example(store)
    refresh_all(store)
    before = _by_key(store, WORKOUT_PERFORMANCE)
    by_member = Merge("t.user_id = s.user_id", (Clause("update_all"),))
    profile = {c: None for c in USER_PROFILE.column_names} | {"user_id": 1, "gender": "F"}

    def change(dob: dt.date, city: str, updated: str) -> None:
        store.merge(USER_PROFILE, pa.Table.from_pylist([profile | {"dob": dob, "city": city, "updated": t(updated)}],
                                                       schema=USER_PROFILE.schema), by_member)
        store.merge(USER_BINS, pa.Table.from_pylist(
            [{"user_id": 1, "age": "35-45", "gender": "F", "city": city, "state": None}], schema=USER_BINS.schema),
            by_member)
        refresh_all(store)

    change(dt.date(1984, 1, 15), "Bergen", "2023-12-02T00:00:00")
    assert _by_key(store, WORKOUT_PERFORMANCE) == before
    assert {r["city"] for r in _by_key(store, WORKOUT_BPM_SUMMARY).values() if r["user_id"] == 1} == {"Bergen"}
    change(dt.date(1950, 1, 15), "Bergen", "2023-12-03T00:00:00")
    assert _by_key(store, WORKOUT_PERFORMANCE) != before
    derived = (*BUSINESS, WORKOUT_BPM_SUMMARY)
    incremental = {spec.name: table_rows(store, spec) for spec in derived}
    for spec in derived:
        shutil.rmtree(store.location(spec))
    refresh_all(store)
    assert {spec.name: table_rows(store, spec) for spec in derived} == incremental


CORRUPTIONS = {
    # check (name@table where the name is not unique): the table, rows kept, column -> new value (SQL)
    "counts_consistent@gym_occupancy": (GYM_OCCUPANCY, None, {"unclosed_visits": "IF(hour = 8, arrivals + 1, "
                                                                                  "unclosed_visits)"}),
    "minutes_within_hour": (GYM_OCCUPANCY, None, {"member_minutes": "IF(hour = 11, 61.0, member_minutes)"}),
    "one_peak_hour_per_day": (GYM_OCCUPANCY, None, {"is_peak_hour": "hour = 9 OR is_peak_hour"}),
    "matches_gym_logs": (GYM_OCCUPANCY, None, {"arrivals": "IF(hour = 11, arrivals + 1, arrivals)"}),
    "covers_gym_summary": (GYM_OCCUPANCY, "date <> DATE'2023-12-19'", {}),
    "windows_nested": (MEMBER_ENGAGEMENT, None, {"visits_7d": "IF(user_id = 1, 5, visits_7d)"}),
    "as_of_reference_date": (MEMBER_ENGAGEMENT, None, {
        "last_visit": "IF(user_id = 2, TIMESTAMP'2024-01-11 08:00:00', last_visit)"}),
    "at_risk_rule": (MEMBER_ENGAGEMENT, None, {"at_risk": "user_id = 3 OR at_risk"}),
    "one_reference_date": (MEMBER_ENGAGEMENT, None, {
        "reference_date": "IF(user_id = 3, DATE'2024-01-09', reference_date)"}),
    "consistent_with_gym_summary": (MEMBER_ENGAGEMENT, None, {
        "last_visit": "IF(user_id = 1, last_visit - INTERVAL 2 DAYS, last_visit)"}),
    "covers_workout_bpm_summary": (MEMBER_ENGAGEMENT, "user_id <> 1", {}),
    "counts_consistent@workout_performance": (WORKOUT_PERFORMANCE, None, {
        "workouts_with_readings": "IF(user_id = 2, readings + 5, workouts_with_readings)"}),
    "bpm_ordered": (WORKOUT_PERFORMANCE, None, {"max_bpm": "max_bpm - 100"}),
    "zones_within_exercise": (WORKOUT_PERFORMANCE, None, {"zone2_minutes": "zone2_minutes + 90"}),
    "matches_workout_bpm_summary": (WORKOUT_PERFORMANCE, None, {"readings": "IF(user_id = 1, readings + 1, readings)"}),
    "matches_completed_workouts": (WORKOUT_PERFORMANCE, None, {"workouts": "IF(user_id = 3, workouts + 1, workouts)"}),
    "zones_within_workout": (WORKOUT_ZONES, None, {"zone4_micros": "IF(user_id = 1, zone4_micros + 1200000000, "
                                                                   "zone4_micros)"}),
    "matches_summary_per_workout": (WORKOUT_ZONES, None, {"max_bpm": "IF(workout_id = 5, max_bpm + 1, max_bpm)"}),
}


@pytest.mark.slow
def test_every_business_check_passes_on_good_data_and_fails_on_corrupted_data(store, settings):
    names = {f"{c.name}@{c.table.name}" if c.name == "counts_consistent" else c.name for c in business_checks}
    assert names == set(CORRUPTIONS), "every check has a corruption that must make it fail"
    build_example(store)
    refresh_all(store)
    lakehouse = LakehouseResource(spark=SparkResource(), root=settings.lakehouse_root, landing_root=settings.landing_root,
                                  reference_date=REF.isoformat())
    for spec in BUSINESS:
        checks = [c for c in business_checks if c.table == spec]
        results = evaluate_checks(store, lakehouse, checks)
        assert all(r.passed for r in results.values()), {n: r.metadata for n, r in results.items() if not r.passed}
    for name, (spec, keep, changes) in CORRUPTIONS.items():
        check = next(c for c in business_checks
                     if c.name == name.split("@")[0] and c.table.name == (name.split("@") + [spec.name])[1])
        good = store.to_arrow(spec, store.read(spec))
        corrupted = store.read(spec).where(keep or "true")
        for column, value in changes.items():
            corrupted = corrupted.withColumn(column, F.expr(value))
        store.overwrite(spec, store.to_arrow(spec, corrupted))
        result = evaluate_checks(store, lakehouse, [check])[check.name]
        assert not result.passed, f"{name} did not fail on: {keep} {changes}"
        assert result.metadata["offending_rows"].value > 0
        store.overwrite(spec, good)


def test_gold_holds_no_personal_data():
    """Gold keeps age bins, gender, city and state at most: no names, address, zip, date of
    birth or sex; the business tables not even a badge, a device or an exact age."""
    forbidden = set(PERSONAL_FIELDS) - {"gender", "city", "state"}
    for spec in GOLD_TABLES:
        assert not forbidden & set(spec.column_names), spec.qualified_name
        assert not spec.personal, spec.qualified_name
    for spec in BUSINESS:
        assert not {"mac_address", "device_id", "age", "max_hr", "dob"} & set(spec.column_names)
        assert spec in GOLD_TABLES


def test_business_assets_have_column_lineage_for_every_column():
    for asset, spec in zip(business_assets, BUSINESS, strict=True):
        lineage = asset.specs_by_key[asset.key].metadata["dagster/column_lineage"]
        described = set(lineage.deps_by_column)
        constant = {"reference_date", "at_risk_after_days"}  # configuration, not data
        assert described | constant >= set(spec.column_names) - constant
        assert described <= set(spec.column_names)


def test_at_risk_threshold_is_validated():
    assert at_risk_days({}) == 14 and at_risk_days({"FITNESS_AT_RISK_DAYS": "30"}) == 30
    for bad in ("0", "-3", "two weeks", "1.5"):
        with pytest.raises(ValueError, match="FITNESS_AT_RISK_DAYS"):
            at_risk_days({"FITNESS_AT_RISK_DAYS": bad})


def test_overview_page_shows_occupancy_by_hour_and_heart_rate_by_age(store, tmp_path):
    from fitness_assets.report import overview_html, report_dir, write_overview

    assert report_dir(str(tmp_path / "lake")) == tmp_path / "report"
    assert report_dir("s3://bucket/lake") is None
    assert write_overview(store, tmp_path / "empty") is None  # nothing to show yet
    build_example(store)
    refresh_all(store)
    page = write_overview(store, tmp_path / "report", {"workouts completed": 6})
    text = page.read_text()
    assert text.count("<svg") == 3 and "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    # 2024-01-10 08:00 had 2 visitors; over the 6 gym-days with a visit that is 2/6 per gym-day.
    assert "08: 0.3 members" in text and "35-45: 146.7 bpm" in text
    assert "<b>1</b> of 3 members at risk" in text and "workouts completed: 6" in text
    assert "&lt;b&gt;" in overview_html({"members": 0}, {"<b>": "x"})  # headline text is escaped


@pytest.mark.slow
def test_business_numbers_match_an_independent_implementation(settings, store, run, tmp_path):
    """A simulated chain through the whole graph: the three tables equal the plain-Python
    implementation, at the configured reference date and, recomputed, at dates near the data
    and another at-risk threshold."""
    stage(SimulatorConfig.tiny(seed=21, members=6, days=3, workouts_per_member_day=3.0), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    report = run()
    failed = [(c.asset, c.check) for c in report.checks if not c.passed and c.asset.startswith("gold/")]
    assert not failed
    reference = settings.reference_date
    _compare(store, expected_gold(settings.lakehouse_root, reference), BUSINESS)
    at_risk_seen = set()
    for day, threshold in ((dt.date(2023, 3, 8), 14), (dt.date(2023, 3, 22), 14), (dt.date(2023, 3, 22), 16)):
        P.member_engagement(store, day, threshold)
        _compare(store, expected_gold(settings.lakehouse_root, day, threshold), (MEMBER_ENGAGEMENT,))
        at_risk_seen |= {r["at_risk"] for r in store.read(MEMBER_ENGAGEMENT).collect()}
    assert at_risk_seen == {True, False}
    assert "members at risk" in report.headlines and "busiest hour" in report.headlines


def test_the_at_risk_threshold_reaches_the_asset_and_a_new_one_recomputes_with_nothing_new_upstream(
        settings, store, run, tmp_path, monkeypatch):
    stage(SimulatorConfig.tiny(seed=22, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    monkeypatch.setenv("FITNESS_AT_RISK_DAYS", "21")
    run()
    assert {r["at_risk_after_days"] for r in store.read(MEMBER_ENGAGEMENT).collect()} == {21}
    versions = {s.qualified_name: store.version(s) for s in (GYM_OCCUPANCY, WORKOUT_ZONES)}
    monkeypatch.setenv("FITNESS_AT_RISK_DAYS", "16")
    run()
    assert {r["at_risk_after_days"] for r in store.read(MEMBER_ENGAGEMENT).collect()} == {16}
    assert store.latest_commit_metadata(MEMBER_ENGAGEMENT, "recomputed")["recomputed"] == "every member"
    assert {s.qualified_name: store.version(s) for s in (GYM_OCCUPANCY, WORKOUT_ZONES)} == versions


def _naive(value):
    return value.replace(tzinfo=None) if isinstance(value, dt.datetime) else value


def _compare(store, expected, specs):
    for spec in specs:
        got = _by_key(store, spec)
        want = {tuple(r[k] for k in spec.keys): r for r in expected[spec.name]}
        assert want and sorted(got) == sorted(want), spec.name
        for key, row in want.items():
            for column, value in row.items():
                actual = got[key][column]
                if isinstance(value, float) and actual is not None:
                    # Spark rounds minutes to 2 decimals and averages at 6; the reference is exact.
                    assert abs(float(actual) - value) <= 0.005, (spec.name, key, column, actual, value)
                else:
                    assert actual == _naive(value), (spec.name, key, column, json.dumps(str(got[key])))


@pytest.mark.parametrize("reads", ["arrow", "spark"])
def test_recordings_match_workout_bpm_fails_on_a_lost_summary_or_a_wrong_count(store, settings, reads):
    """The summary's readings and workouts against workout_bpm (row counts from the Delta log):
    passes on the example, fails when a workout's summary is lost or its count is wrong; with
    the store's own Arrow reads and through Spark."""
    from fitness_assets.assets.gold.checks import gold_checks
    from fitness_assets.tables import WORKOUT_BPM_SUMMARY

    store = store if reads == "arrow" else spark_reads(store)
    build_example(store)
    refresh_all(store)
    lakehouse = LakehouseResource(spark=SparkResource(), root=settings.lakehouse_root, landing_root=settings.landing_root,
                                  reference_date=REF.isoformat())
    check = next(c for c in gold_checks if c.name == "recordings_match_workout_bpm")
    result = evaluate_checks(store, lakehouse, [check])[check.name]
    assert result.passed and result.metadata["workout_bpm_rows"].value == 5
    good = store.to_arrow(WORKOUT_BPM_SUMMARY, store.read(WORKOUT_BPM_SUMMARY))
    summary = store.read(WORKOUT_BPM_SUMMARY)
    phantom = summary.where("workout_id = 5").withColumn("workout_id", F.lit(99)).withColumn("num_recordings", F.lit(0))
    for corrupted in (summary.where("workout_id <> 5"),  # a workout not summarised
                      summary.withColumn("num_recordings",  # a wrong count
                                         F.expr("IF(workout_id = 18, num_recordings + 1, num_recordings)")),
                      summary.unionByName(phantom)):  # a summary without readings (the sum unchanged)
        store.overwrite(WORKOUT_BPM_SUMMARY, store.to_arrow(WORKOUT_BPM_SUMMARY, corrupted))
        assert not evaluate_checks(store, lakehouse, [check])[check.name].passed
        store.overwrite(WORKOUT_BPM_SUMMARY, good)


def test_bpm_ordered_holds_for_readings_finer_than_the_exact_mean(spark):
    """The means are exact at 6 decimals: one reading of 72.1234567 has the mean 72.123457,
    above its max, and one of 0.0000004 the mean 0. Both are valid readings; the two
    `bpm_ordered` checks must pass on what the transforms make of them (and still fail on a
    mean above its bound, as the corruption test shows)."""
    from fitness_assets.assets.gold.checks import gold_checks
    from fitness_assets.transforms import business as B
    from fitness_assets.transforms import gold as T

    start = dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)
    rows = [(1, workout, 1, start, start + dt.timedelta(minutes=30), start + dt.timedelta(minutes=5), bpm)
            for workout, bpm in ((7, 72.1234567), (8, 0.0000004), (9, 71.9999996))]
    readings = spark.createDataFrame(rows, "user_id long, workout_id long, session_id long, start_time timestamp, "
                                           "end_time timestamp, time timestamp, heartrate double")
    bins = spark.createDataFrame([(1, "25-35", "F", "X", "Y")], "user_id long, age string, gender string, "
                                                                 "city string, state string")
    summary = T.workout_bpm_summary(readings, bins)
    zones = B.workout_zones(readings, spark.createDataFrame([(1, dt.date(1990, 1, 1))], "user_id long, dob date"))
    performance = B.workout_performance(readings.select(*B.WORKOUT_KEY, "start_time", "end_time").distinct(), zones)
    means = {r["workout_id"]: (r["min_bpm"], r["avg_bpm"], r["max_bpm"]) for r in summary.collect()}
    assert means[7][1] > means[7][2] and means[8][1] == 0.0  # what the checks must allow
    for check, table in ((next(c for c in gold_checks if c.name == "bpm_ordered"), summary),
                         (next(c for c in business_checks if c.name == "bpm_ordered"), performance)):
        assert table.where(F.expr(check.condition)).count() == 0, check.table.qualified_name
        for wrong in (F.col("max_bpm") + 0.000002, F.lit(-0.000002) if "min_bpm" not in table.columns
                      else F.col("min_bpm") - 0.000002):  # a mean off by more than the rounding
            assert table.withColumn("avg_bpm", wrong).where(F.expr(check.condition)).count() == table.count()
