"""A deliberately simple, separate implementation of the silver/gold rules in plain Python,
computed from the bronze tables, to check the Spark pipeline's numbers independently."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal

from deltalake import DeltaTable

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
THREE_HOURS = 3 * 3600 * 10**6


def _micros(value) -> int:
    if isinstance(value, str):
        try:
            value = Decimal(value)
        except ArithmeticError:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if t.tzinfo is None:
                t = t.replace(tzinfo=dt.UTC)
            return (t - EPOCH) // dt.timedelta(microseconds=1)
    return int(Decimal(str(value)) * 10**6)


def _ts(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=micros)


def _rows(root: str, layer: str, name: str) -> list[dict]:
    return DeltaTable(f"{root}/{layer}/{name}").to_pyarrow_table().to_pylist()


def _age_bin(dob: dt.date | None, ref: dt.date) -> str:
    if dob is None:
        return "invalid age"
    age = ref.year - dob.year - ((ref.month, ref.day) < (dob.month, dob.day))
    for upper, label in ((18, "under 18"), (25, "18-25"), (35, "25-35"), (45, "35-45"), (55, "45-55"),
                         (65, "55-65"), (75, "65-75"), (85, "75-85"), (95, "85-95")):
        if age < upper:
            return label
    return "95+"


def expected_gold(root: str, reference: dt.date) -> dict[str, list[dict]]:
    users = {}
    for r in _rows(root, "bronze", "registered_users_bz"):
        order = (r["registration_timestamp"], r["device_id"], r["mac_address"])
        if r["user_id"] not in users or order < users[r["user_id"]][0]:
            users[r["user_id"]] = (order, r)
    users = {uid: row for uid, (_, row) in users.items()}

    visits: dict[tuple, int | None] = {}
    for r in _rows(root, "bronze", "gym_logins_bz"):
        key = (r["mac_address"], r["gym"], _micros(r["login"]))
        logout = None if r["logout"] is None else _micros(r["logout"])
        old = visits.get(key)
        visits[key] = logout if old is None else (old if logout is None else max(old, logout))

    events: dict[tuple, int] = {}
    readings: dict[tuple, float | None] = {}
    profiles: dict[int, tuple] = {}
    for r in _rows(root, "bronze", "kafka_multiplex_bz"):
        p = json.loads(r["value"], parse_float=Decimal)
        if r["topic"] == "workout":
            key = (int(p["user_id"]), int(p["workout_id"]), int(p["session_id"]), p["action"])
            events[key] = min(events.get(key, 2**62), _micros(p["timestamp"]))
        elif r["topic"] == "bpm":
            key = (int(p["device_id"]), _micros(p["time"]))
            hr = None if p.get("heartrate") is None else float(p["heartrate"])
            old = readings.get(key)
            readings[key] = hr if old is None else (old if hr is None else max(old, hr))
        else:
            order = (_micros(p["timestamp"]), r["partition"], r["offset"])
            if p["user_id"] not in profiles or order > profiles[int(p["user_id"])][0]:
                profiles[int(p["user_id"])] = (order, p)

    bins = {}
    for uid, (_, p) in profiles.items():
        if p["update_type"] == "delete":
            continue
        dob = dt.datetime.strptime(p["dob"], "%m/%d/%Y").date() if p.get("dob") else None
        address = p.get("address") or {}
        bins[uid] = (_age_bin(dob, reference), p.get("gender"), address.get("city"), address.get("state"))

    completed = {}
    for (uid, wid, sid, action), t in events.items():
        if action == "start" and (uid, wid, sid, "stop") in events:
            end = events[(uid, wid, sid, "stop")]
            if t < end <= t + THREE_HOURS:
                completed[(uid, wid, sid)] = (t, end)

    by_device = defaultdict(list)
    for (device, t), hr in readings.items():
        if hr is not None and hr > 0:
            by_device[device].append((t, hr))
    summary = []
    for (uid, wid, sid), (start, end) in completed.items():
        if uid not in users:
            continue
        hrs = [hr for t, hr in by_device[users[uid]["device_id"]] if start < t <= end]
        if hrs:
            age, gender, city, state = bins.get(uid, (None, None, None, None))
            summary.append({"workout_id": wid, "session_id": sid, "user_id": uid, "age": age, "gender": gender,
                            "city": city, "state": state, "min_bpm": min(hrs), "avg_bpm": sum(hrs) / len(hrs),
                            "max_bpm": max(hrs), "num_recordings": len(hrs)})

    by_mac = {row["mac_address"]: uid for uid, row in users.items()}
    gym = []
    for (mac, gym_id, login), logout in visits.items():
        if logout is None or mac not in by_mac:
            continue
        for (uid, wid, sid), (start, end) in completed.items():
            if uid == by_mac[mac] and login <= start <= logout:
                gym.append({"date": _ts(login).date(), "gym": gym_id, "mac_address": mac, "workout_id": wid,
                            "session_id": sid, "minutes_in_gym": (logout - login) / 60e6,
                            "minutes_exercising": (end - start) / 60e6})
    return {"workout_bpm_summary": summary, "gym_summary": gym}
