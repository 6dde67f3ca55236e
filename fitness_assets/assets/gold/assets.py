"""Gold assets: thin wrappers of pipelines.gold."""

from fitness_assets.assets.common import refresh_asset
from fitness_assets.pipelines import gold as refresh
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGS,
    GYM_SUMMARY,
    USER_BINS,
    USERS,
    WORKOUT_BPM,
    WORKOUT_BPM_SUMMARY,
)

workout_bpm_summary = refresh_asset(
    WORKOUT_BPM_SUMMARY, [WORKOUT_BPM, USER_BINS], refresh.refresh_workout_bpm_summary,
    {"workout_id": [(WORKOUT_BPM, "workout_id")], "session_id": [(WORKOUT_BPM, "session_id")],
     "user_id": [(WORKOUT_BPM, "user_id")], "age": [(USER_BINS, "age")], "gender": [(USER_BINS, "gender")],
     "city": [(USER_BINS, "city")], "state": [(USER_BINS, "state")], "min_bpm": [(WORKOUT_BPM, "heartrate")],
     "avg_bpm": [(WORKOUT_BPM, "heartrate")], "max_bpm": [(WORKOUT_BPM, "heartrate")],
     "num_recordings": [(WORKOUT_BPM, "time")]})
gym_summary = refresh_asset(
    GYM_SUMMARY, [GYM_LOGS, USERS, COMPLETED_WORKOUTS], refresh.refresh_gym_summary,
    {"date": [(GYM_LOGS, "login")], "gym": [(GYM_LOGS, "gym")], "mac_address": [(GYM_LOGS, "mac_address")],
     "workout_id": [(COMPLETED_WORKOUTS, "workout_id")], "session_id": [(COMPLETED_WORKOUTS, "session_id")],
     "minutes_in_gym": [(GYM_LOGS, "login"), (GYM_LOGS, "logout")],
     "minutes_exercising": [(COMPLETED_WORKOUTS, "start_time"), (COMPLETED_WORKOUTS, "end_time")]})

gold_assets = [workout_bpm_summary, gym_summary]
