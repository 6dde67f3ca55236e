"""Silver assets: each a thin wrapper of its refresh procedure (pipelines.silver)."""

from fitness_assets.assets.common import refresh_asset
from fitness_assets.pipelines import silver as refresh
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGINS_BZ,
    GYM_LOGS,
    HEART_RATE,
    KAFKA_MULTIPLEX_BZ,
    REGISTERED_USERS_BZ,
    USER_BINS,
    USER_PROFILE,
    USER_PROFILE_HISTORY,
    USERS,
    WORKOUT_BPM,
    WORKOUTS,
)


def _same(upstream, *columns):
    return {c: [(upstream, c)] for c in columns}


users = refresh_asset(USERS, [REGISTERED_USERS_BZ], refresh.refresh_users,
                      _same(REGISTERED_USERS_BZ, "user_id", "device_id", "mac_address", "registration_timestamp"))
gym_logs = refresh_asset(GYM_LOGS, [GYM_LOGINS_BZ], refresh.refresh_gym_logs,
                         _same(GYM_LOGINS_BZ, "mac_address", "gym", "login", "logout"))
user_profile_history = refresh_asset(USER_PROFILE_HISTORY, [KAFKA_MULTIPLEX_BZ], refresh.refresh_user_profile_history,
                                     {c: [(KAFKA_MULTIPLEX_BZ, "value")] for c in USER_PROFILE_HISTORY.column_names})
user_profile = refresh_asset(USER_PROFILE, [USER_PROFILE_HISTORY], refresh.refresh_user_profile,
                             _same(USER_PROFILE_HISTORY, *USER_PROFILE.column_names))
workouts = refresh_asset(WORKOUTS, [KAFKA_MULTIPLEX_BZ], refresh.refresh_workouts,
                         {c: [(KAFKA_MULTIPLEX_BZ, "value")] for c in WORKOUTS.column_names})
heart_rate = refresh_asset(HEART_RATE, [KAFKA_MULTIPLEX_BZ], refresh.refresh_heart_rate,
                           {c: [(KAFKA_MULTIPLEX_BZ, "value")] for c in HEART_RATE.column_names})
user_bins = refresh_asset(USER_BINS, [USER_PROFILE], refresh.refresh_user_bins,
                          _same(USER_PROFILE, "user_id", "gender", "city", "state") | {"age": [(USER_PROFILE, "dob")]},
                          needs_reference_date=True)
completed_workouts = refresh_asset(
    COMPLETED_WORKOUTS, [WORKOUTS], refresh.refresh_completed_workouts,
    _same(WORKOUTS, "user_id", "workout_id", "session_id") | {"start_time": [(WORKOUTS, "time")],
                                                               "end_time": [(WORKOUTS, "time")]})
workout_bpm = refresh_asset(
    WORKOUT_BPM, [COMPLETED_WORKOUTS, HEART_RATE, USERS], refresh.refresh_workout_bpm,
    _same(COMPLETED_WORKOUTS, "user_id", "workout_id", "session_id", "start_time", "end_time")
    | _same(HEART_RATE, "time", "heartrate"))

silver_assets = [users, gym_logs, user_profile_history, user_profile, workouts, heart_rate, user_bins,
                 completed_workouts, workout_bpm]
