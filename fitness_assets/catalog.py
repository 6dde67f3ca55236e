"""Column descriptions for analysts: what each column of each table means.

One short sentence per column: what the value is, its unit, where it comes from and the rule
that shapes it. Keyed by ``"<layer>.<table>"`` (``TableSpec.qualified_name``), then by
column name; every column of every table in ``fitness_assets.tables.ALL_TABLES`` has one
(``fitness_assets_tests/test_catalog.py`` keeps it that way). Columns shared by several
tables (audit columns, quarantine columns, profile fields) share their text through the
constants below. No Spark and no Dagster here: plain data.
"""

from __future__ import annotations

from fitness_assets.tables import TableSpec

# --- shared texts -------------------------------------------------------------------------

LOAD_TIME = ("UTC timestamp at which the ingestion batch that wrote this row ran (one value per "
             "batch, not the time of the event).")
SOURCE_FILE = ("Where the row was read: a landing file as `<source>/<file name>`, or "
               "`kafka://<topic>/<partition>` for records read straight from Kafka.")

QUARANTINE_SOURCE_FILE = ("Where the rejected line was read: a landing file as `<source>/<file name>`, or "
                          "`kafka://<topic>/<partition>` for records read straight from Kafka.")
QUARANTINE_LINE = ("Line number of the rejected line in its file (from 1; blank lines are skipped but "
                   "counted), or the Kafka offset for records read from Kafka; 0 marks a whole file "
                   "that could not be read and -1 a file that changed after it was ingested.")
QUARANTINE_RAW = ("The rejected line as text (for a Kafka record that is not UTF-8, a printable form of its "
                  "bytes cut at 4096 characters; for a changed file, its new size and SHA-256); NULL for an "
                  "unreadable file and for profile records erased after the member's delete.")
QUARANTINE_REASON = ("Why the line was rejected, the first problem found with fields in schema order: "
                     "`malformed_csv`, `malformed_json`, `malformed_payload`, `missing_field:<f>`, "
                     "`wrong_type:<f>`, `invalid_value:<f>`, `unreadable_file:<why>` or `changed_file`.")
QUARANTINE_LOAD_TIME = "UTC timestamp at which the ingestion batch that rejected this line ran."

QUARANTINE = {
    "source_file": QUARANTINE_SOURCE_FILE,
    "line": QUARANTINE_LINE,
    "raw": QUARANTINE_RAW,
    "reason": QUARANTINE_REASON,
    "load_time": QUARANTINE_LOAD_TIME,
}

USER_ID = "Member identifier, the `user_id` of the registration CSV and of the Kafka payloads."
MEMBER_USER_ID = "Member identifier (the same `user_id` as in `silver.users`)."
WORKOUT_ID = "Workout identifier from the Kafka `workout` payload's `workout_id`."
SESSION_ID = "Session identifier from the Kafka `workout` payload's `session_id`."
MAC_ADDRESS = ("Badge MAC address `xx:xx:xx:xx:xx:xx` that identifies the member at gym doors, lower-cased "
               "at bronze.")
GYM = "Gym identifier (integer) from the gym-login CSV's `gym` column."
START_TIME = ("UTC timestamp of the workout's `start` event (the earliest reported time, from the "
              "`workout` payload's `timestamp`).")
END_TIME = ("UTC timestamp of the workout's `stop` event, after the start and at most 3 hours after it "
            "(the earliest reported time, from the `workout` payload's `timestamp`).")

# Profile fields of the Kafka `user_info` (CDC) payload, as in `silver.user_profile`.
PROFILE = {
    "user_id": "Member identifier from the Kafka `user_info` payload's `user_id`.",
    "dob": "Date of birth, parsed from the `user_info` payload's `dob` (`MM/dd/yyyy`); NULL when not given.",
    "sex": "Sex as given in the `user_info` payload's `sex`.",
    "gender": "Gender as given in the `user_info` payload's `gender`.",
    "first_name": "First name from the `user_info` payload's `first_name`.",
    "last_name": "Last name from the `user_info` payload's `last_name`.",
    "street_address": "Street address from the `user_info` payload's `address.street_address`.",
    "city": "City from the `user_info` payload's `address.city`.",
    "state": "State from the `user_info` payload's `address.state`.",
    "zip": "ZIP code as an integer, from the `user_info` payload's `address.zip`.",
    "updated": ("UTC timestamp of the profile change, from the `user_info` payload's `timestamp` (epoch "
                "seconds, converted exactly)."),
}

ERASED = " (erased, NULL, in a delete version and every earlier version of the member)."


def _erased(text: str) -> str:
    return text.removesuffix(".") + ERASED


PROFILE_HISTORY = {
    **PROFILE,
    **{c: _erased(PROFILE[c]) for c in ("dob", "first_name", "last_name", "street_address", "city", "state", "zip")},
    "sex": ("Sex as given in the `user_info` payload's `sex`; a delete version keeps the last known value "
            "when the delete does not carry one."),
    "gender": ("Gender as given in the `user_info` payload's `gender`; a delete version keeps the last known "
               "value when the delete does not carry one."),
    "updated": ("UTC timestamp of the change that made this version, from the `user_info` payload's "
                "`timestamp` (epoch seconds); equal to `valid_from`."),
    "valid_from": "SCD 2 start of this version: UTC timestamp of its change (`updated`); part of the key.",
    "valid_to": ("SCD 2 end of this version: `valid_from` of the member's next version, NULL for the current "
                 "version."),
    "is_current": "True for the member's latest version (`valid_to` is NULL).",
    "is_deleted": "True when this version is a `delete` change (`update_type` = `delete`) of the member.",
}

BIN_AGE = ("Age bin in whole years at `FITNESS_REFERENCE_DATE` from the profile's `dob`: `under 18`, "
           "`18-25`, `25-35`, `35-45`, `45-55`, `55-65`, `65-75`, `75-85`, `85-95` (lower bound inclusive), "
           "`95+`, or `invalid age` without a `dob`.")

# --- the catalog --------------------------------------------------------------------------

COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "reference.date_lookup": {
        "date": "Calendar day; one row for every day from `FITNESS_DATE_LOOKUP_START` to `FITNESS_DATE_LOOKUP_END`.",
        "week": ("Week of the year with Sunday as first day, days before the year's first Sunday in week 0 "
                 "(strftime `%U`)."),
        "year": "Calendar year of `date`.",
        "month": "Month of `date`, 1 = January to 12 = December.",
        "dayofweek": "Day of the week of `date`, 1 = Sunday to 7 = Saturday.",
        "dayofmonth": "Day of the month of `date`, from 1.",
        "dayofyear": "Day of the year of `date`, 1 = 1 January.",
        "week_part": "`{year}-{week}` text of `year` and `week`, week not zero-padded (e.g. `2024-5`).",
    },
    "bronze.registered_users_bz": {
        "user_id": "Member identifier, from the registration portal's CSV `user_id`.",
        "device_id": ("Identifier of the member's heart-rate device, from the registration CSV `device_id` "
                      "(matches `bpm` readings' `device_id`)."),
        "mac_address": ("Badge MAC address `xx:xx:xx:xx:xx:xx` from the registration CSV, lower-cased "
                        "(matches `gym_logins`' `mac_address`)."),
        "registration_timestamp": "Registration time in epoch seconds, from the registration CSV, as received.",
        "load_time": LOAD_TIME,
        "source_file": "Registration CSV the row was read from, as `registered_users/<file name>`.",
    },
    "bronze.gym_logins_bz": {
        "mac_address": "Badge MAC address `xx:xx:xx:xx:xx:xx` from the gym-login CSV, lower-cased.",
        "gym": GYM,
        "login": "Badge-in time in epoch seconds, from the gym-login CSV, as received.",
        "logout": ("Badge-out time in epoch seconds, from the gym-login CSV; NULL while the member is inside "
                   "(a later file may repeat the visit with its logout)."),
        "load_time": LOAD_TIME,
        "source_file": "Gym-login CSV the row was read from, as `gym_logins/<file name>`.",
    },
    "bronze.kafka_multiplex_bz": {
        "key": "Kafka record key as text (NULL when the record has none).",
        "value": ("Kafka record value: the JSON payload of the topic (`user_info`, `workout` or `bpm`) as text, "
                  "validated at bronze."),
        "topic": "Kafka topic of the record: `user_info` (profile CDC), `workout` or `bpm`; the table's partition.",
        "partition": "Kafka partition of the record within its topic.",
        "offset": "Kafka offset of the record within its topic-partition.",
        "timestamp": ("Kafka record timestamp in epoch milliseconds (a value below 10^11 was written in seconds "
                      "and is multiplied by 1000)."),
        "date": ("UTC calendar day of `timestamp`, looked up in `reference.date_lookup`; NULL when outside its "
                 "range."),
        "week_part": ("`{year}-{week}` of `date` (Sunday-first weeks, strftime `%U`) from "
                      "`reference.date_lookup`; NULL when outside its range."),
        "load_time": LOAD_TIME,
        "source_file": ("Where the record was read: a landing file as `kafka_multiplex/<file name>`, or "
                        "`kafka://<topic>/<partition>` for records read straight from Kafka."),
    },
    "quarantine.registered_users_bz": QUARANTINE,
    "quarantine.gym_logins_bz": QUARANTINE,
    "quarantine.kafka_multiplex_bz": QUARANTINE,
    "silver.users": {
        "user_id": "Member identifier from the registration CSV; one row per member, the earliest registration wins.",
        "device_id": ("Heart-rate device of the member's earliest registration (ties: lowest `device_id`, then "
                      "`mac_address`); links `silver.heart_rate`."),
        "mac_address": "Badge MAC address of the member's earliest registration, lower-cased; links `silver.gym_logs`.",
        "registration_timestamp": ("UTC timestamp of the member's earliest registration, converted exactly from "
                                   "the CSV's epoch seconds."),
    },
    "silver.gym_logs": {
        "mac_address": MAC_ADDRESS,
        "gym": GYM,
        "login": "UTC timestamp of the badge-in, converted exactly from the gym-login CSV's epoch seconds.",
        "logout": ("UTC timestamp of the badge-out, the latest logout seen for the visit; NULL while the member "
                   "is inside or the logout has not arrived yet."),
    },
    "silver.user_profile": {
        **PROFILE,
        "user_id": ("Member identifier from the `user_info` payload; one row per member with a current profile "
                    "(a member whose latest change is a delete is removed)."),
        "updated": ("UTC timestamp of the member's latest change, from the `user_info` payload's `timestamp` "
                    "(epoch seconds); ties broken by the highest Kafka partition, then offset."),
    },
    "silver.user_profile_history": PROFILE_HISTORY,
    "silver.workouts": {
        "user_id": "Member identifier from the Kafka `workout` payload's `user_id`.",
        "workout_id": WORKOUT_ID,
        "time": ("UTC timestamp of the event from the `workout` payload's `timestamp` (epoch seconds); the "
                 "earliest reported time when the event arrives more than once."),
        "action": "Event type from the `workout` payload's `action`: `start` or `stop`.",
        "session_id": SESSION_ID,
    },
    "silver.heart_rate": {
        "device_id": "Heart-rate device identifier from the Kafka `bpm` payload's `device_id`.",
        "time": ("UTC timestamp of the reading from the `bpm` payload's `time` (epoch seconds or ISO-8601); "
                 "one row per device and instant."),
        "heartrate": ("Heart rate in bpm from the `bpm` payload's `heartrate`; the highest reported for the "
                      "instant, NULL when none was given."),
        "valid": "True when `heartrate` is present, finite and > 0; only valid readings reach `workout_bpm`.",
    },
    "silver.user_bins": {
        "user_id": "Member identifier; one row per member with a current (not deleted) profile.",
        "age": BIN_AGE,
        "gender": "Gender from the member's current profile (`silver.user_profile`).",
        "city": "City from the member's current profile (`silver.user_profile`).",
        "state": "State from the member's current profile (`silver.user_profile`).",
    },
    "silver.completed_workouts": {
        "user_id": "Member identifier from the `workout` events (`silver.workouts`).",
        "workout_id": WORKOUT_ID,
        "session_id": SESSION_ID,
        "start_time": START_TIME,
        "end_time": END_TIME,
    },
    "silver.workout_bpm": {
        "user_id": MEMBER_USER_ID,
        "workout_id": WORKOUT_ID,
        "session_id": SESSION_ID,
        "start_time": "UTC start of the completed workout (`silver.completed_workouts.start_time`).",
        "end_time": "UTC end of the completed workout (`silver.completed_workouts.end_time`).",
        "time": ("UTC timestamp of a valid reading of the member's registered device, with "
                 "`start_time < time <= end_time`."),
        "heartrate": "Heart rate of the reading in bpm (`silver.heart_rate`, valid readings only).",
    },
    "gold.workout_bpm_summary": {
        "workout_id": WORKOUT_ID,
        "session_id": SESSION_ID,
        "user_id": ("Member identifier (as in `silver.users`); one row per completed workout with at least one "
                    "valid reading."),
        "age": "Member's age bin from `silver.user_bins`; NULL when the member has no current profile.",
        "gender": "Member's gender from `silver.user_bins`; NULL when the member has no current profile.",
        "city": "Member's city from `silver.user_bins`; NULL when the member has no current profile.",
        "state": "Member's state from `silver.user_bins`; NULL when the member has no current profile.",
        "min_bpm": "Lowest heart rate (bpm) of the workout's valid readings in `silver.workout_bpm`.",
        "avg_bpm": ("Mean heart rate (bpm) of the workout's valid readings, an exact decimal mean at 6 decimals "
                    "stored as a double."),
        "max_bpm": "Highest heart rate (bpm) of the workout's valid readings in `silver.workout_bpm`.",
        "num_recordings": "Number of valid readings of the workout (its rows in `silver.workout_bpm`).",
    },
    "gold.gym_summary": {
        "date": "UTC calendar day of the visit's `login`.",
        "gym": GYM,
        "mac_address": MAC_ADDRESS,
        "workout_id": ("Workout of the member (found through `silver.users`) whose `start_time` lies between the "
                       "visit's `login` and `logout`, both included."),
        "session_id": SESSION_ID,
        "minutes_in_gym": ("Minutes from `login` to `logout` of the visit, rounded to 2 decimals (repeated on "
                           "each workout row of the visit)."),
        "minutes_exercising": "Minutes from `start_time` to `end_time` of the workout, rounded to 2 decimals.",
    },
    "gold.gym_occupancy": {
        "gym": GYM,
        "date": "UTC calendar day of the hour.",
        "hour": "UTC hour of the day, 0-23; a row exists for every hour with at least one member inside.",
        "visitors": ("Distinct badges (`mac_address`) inside the gym at some moment of the hour: a visit counts "
                     "from the hour of its login to the hour of its logout, a logout exactly on the hour excluded."),
        "arrivals": "Visits of `silver.gym_logs` whose login falls in the hour.",
        "unclosed_visits": ("Visits counted in this hour (their login hour) only, because their logout is missing, "
                            "before the login or more than 24 h after it."),
        "member_minutes": ("Minutes members spent inside during the hour (overlap of each closed visit with the "
                           "hour, summed in microseconds), rounded to 2 decimals; unclosed visits add none."),
        "is_peak_hour": "True for the hour with the most visitors of the gym and day (the earliest on a tie).",
    },
    "gold.member_engagement": {
        "user_id": ("Member identifier: every member of `silver.users` and every `user_id` with a completed "
                    "workout."),
        "reference_date": ("The date the row is computed at (`FITNESS_REFERENCE_DATE`, today in UTC when unset); "
                           "activity on later days is ignored."),
        "last_visit": ("UTC login of the member's latest visit (any gym, through their badge in `silver.users`) on "
                       "or before the reference date; NULL when none."),
        "last_workout": ("UTC start of the member's latest completed workout on or before the reference date; NULL "
                         "when none."),
        "visits_7d": "Visits (logins) of the member on the reference date and the 6 days before it.",
        "visits_30d": "Visits (logins) of the member on the reference date and the 29 days before it.",
        "workouts_7d": "Completed workouts started on the reference date and the 6 days before it.",
        "workouts_30d": "Completed workouts started on the reference date and the 29 days before it.",
        "days_inactive": ("Days from the member's last activity (the later UTC date of `last_visit` and "
                          "`last_workout`) to the reference date; NULL when the member was never active."),
        "workouts_before_lapse": ("Completed workouts started in the 30 days up to and including the day of the "
                                  "member's last activity."),
        "at_risk_after_days": "The at-risk threshold in days the row was computed with (`FITNESS_AT_RISK_DAYS`).",
        "at_risk": ("True for a member who trained regularly (`workouts_before_lapse` >= 4) and has been inactive "
                    "for `at_risk_after_days` days or more (`days_inactive`)."),
    },
    "gold.workout_zones": {
        "user_id": "Member identifier of the workout (`silver.workout_bpm`).",
        "workout_id": "Workout identifier, with `session_id` and `user_id` the workout's key.",
        "session_id": "Session number of the workout.",
        "start_time": "UTC start of the workout (`silver.workout_bpm.start_time`); its date places the workout in a week.",
        "end_time": "UTC end of the workout (`silver.workout_bpm.end_time`).",
        "readings": "Valid heart-rate readings of the workout (rows of `silver.workout_bpm`).",
        "heartrate_sum": "Exact sum of those readings' heart rates (bpm, 6 decimals), for exact weekly means.",
        "max_bpm": "Highest heart rate (bpm) of the workout's readings.",
        "zone1_micros": ("Microseconds in zone 1 (50-60 % of max HR = 220 - age at the workout's date; each reading "
                         "counts the time since the previous one or the start); NULL without a usable date of birth."),
        "zone2_micros": "Microseconds in zone 2 (60-70 % of max HR), counted as for zone 1.",
        "zone3_micros": "Microseconds in zone 3 (70-80 % of max HR), counted as for zone 1.",
        "zone4_micros": "Microseconds in zone 4 (80-90 % of max HR), counted as for zone 1.",
        "zone5_micros": "Microseconds in zone 5 (90 % of max HR and above), counted as for zone 1.",
    },
    "gold.workout_performance": {
        "user_id": "Member identifier of the completed workouts (`silver.completed_workouts`).",
        "year": "Calendar year of the workouts' UTC start date.",
        "week": ("Week of the year of the workouts' UTC start date, Sunday first, days before the first Sunday in "
                 "week 0 (strftime `%U`, as `reference.date_lookup`)."),
        "week_part": "`{year}-{week}` text of `year` and `week` (as `reference.date_lookup.week_part`).",
        "week_start": "First day of the week within its year: the Sunday that starts it, or 1 January for week 0.",
        "workouts": "Completed workouts of the member that started in the week.",
        "minutes_exercising": "Minutes from start to end of those workouts, summed exactly, rounded to 2 decimals.",
        "workouts_with_readings": "Those workouts with at least one valid reading in `silver.workout_bpm`.",
        "readings": "Valid heart-rate readings of those workouts (rows of `silver.workout_bpm`).",
        "avg_bpm": ("Mean heart rate (bpm) of the week's readings, an exact decimal mean at 6 decimals stored as a "
                    "double; NULL without readings."),
        "max_bpm": "Highest heart rate (bpm) of the week's readings; NULL without readings.",
        "zone1_minutes": ("Minutes in zone 1 (50-60 % of max HR = 220 - age at the workout's date; each reading "
                          "counts the time since the previous one or the start); NULL when no reading has a known "
                          "age."),
        "zone2_minutes": "Minutes in zone 2 (60-70 % of max HR), counted as for zone 1; NULL when no reading has a known age.",
        "zone3_minutes": "Minutes in zone 3 (70-80 % of max HR), counted as for zone 1; NULL when no reading has a known age.",
        "zone4_minutes": "Minutes in zone 4 (80-90 % of max HR), counted as for zone 1; NULL when no reading has a known age.",
        "zone5_minutes": ("Minutes in zone 5 (90 % of max HR and above), counted as for zone 1; NULL when no reading "
                          "has a known age."),
    },
}


def column_description(spec: TableSpec, column: str) -> str:
    """The description of ``column`` of ``spec``; KeyError naming both when there is none."""
    table = COLUMN_DESCRIPTIONS.get(spec.qualified_name)
    if table is None:
        raise KeyError(f"no column descriptions for table {spec.qualified_name!r}: add it to "
                       f"fitness_assets.catalog.COLUMN_DESCRIPTIONS")
    try:
        return table[column]
    except KeyError:
        raise KeyError(f"no description for column {column!r} of table {spec.qualified_name!r}: add it to "
                       f"fitness_assets.catalog.COLUMN_DESCRIPTIONS") from None
