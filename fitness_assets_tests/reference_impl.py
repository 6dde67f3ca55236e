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


def expected_gold(root: str, reference: dt.date, at_risk_days: int = 14) -> dict[str, list[dict]]:
    users = {}
    for r in _rows(root, "bronze", "registered_users_bz"):
        order = (_micros(r["registration_timestamp"]), r["device_id"], r["mac_address"])
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

    by_mac = defaultdict(set)  # a badge may be registered to more than one member
    for uid, row in users.items():
        by_mac[row["mac_address"]].add(uid)
    chosen: dict[tuple, tuple] = {}  # one row per key: the earliest login, then the lowest member
    for (mac, gym_id, login), logout in visits.items():
        if logout is None:
            continue
        for (uid, wid, sid), (start, end) in completed.items():
            if uid in by_mac.get(mac, ()) and login <= start <= logout:
                key = (mac, gym_id, _ts(login).date(), wid, sid)
                row = {"date": _ts(login).date(), "gym": gym_id, "mac_address": mac, "workout_id": wid,
                       "session_id": sid, "minutes_in_gym": (logout - login) / 60e6,
                       "minutes_exercising": (end - start) / 60e6}
                if key not in chosen or (login, uid) < chosen[key][0]:
                    chosen[key] = ((login, uid), row)
    gym = [row for _, row in chosen.values()]
    current_dob = {}
    for uid, (_, p) in profiles.items():
        if p["update_type"] != "delete" and p.get("dob"):
            current_dob[uid] = dt.datetime.strptime(p["dob"], "%m/%d/%Y").date()
    return {"workout_bpm_summary": summary, "gym_summary": gym, "gym_occupancy": _occupancy(visits),
            "member_engagement": _engagement(users, visits, completed, reference, at_risk_days),
            "workout_performance": _performance(users, completed, by_device, current_dob),
            "workout_zones": _zones(users, completed, by_device, current_dob)}


HOUR = 3600 * 10**6
DAY = 24 * HOUR


def _occupancy(visits: dict[tuple, int | None]) -> list[dict]:
    """Per gym, day and hour: who was inside, arrivals, visits without a usable logout,
    minutes inside; the earliest busiest hour of each gym-day is the peak."""
    cells: dict[tuple, dict] = {}
    for (mac, gym_id, login), logout in visits.items():
        closed = logout is not None and login <= logout <= login + DAY
        first = login - login % HOUR
        last = first
        if closed and logout > login:
            last = (logout - 1) - (logout - 1) % HOUR
        hour = first
        while hour <= last:
            when = _ts(hour)
            cell = cells.setdefault((gym_id, when.date(), when.hour),
                                    {"macs": set(), "arrivals": 0, "unclosed": 0, "micros": 0})
            cell["macs"].add(mac)
            cell["arrivals"] += hour == first
            cell["unclosed"] += not closed
            if closed:
                cell["micros"] += min(logout, hour + HOUR) - max(login, hour)
            hour += HOUR
    busiest: dict[tuple, tuple] = {}
    for (gym_id, day, hour), cell in cells.items():
        rank = (-len(cell["macs"]), hour)
        if (gym_id, day) not in busiest or rank < busiest[(gym_id, day)]:
            busiest[(gym_id, day)] = rank
    return [{"gym": gym_id, "date": day, "hour": hour, "visitors": len(c["macs"]), "arrivals": c["arrivals"],
             "unclosed_visits": c["unclosed"], "member_minutes": c["micros"] / 60e6,
             "is_peak_hour": busiest[(gym_id, day)][1] == hour}
            for (gym_id, day, hour), c in cells.items()]


def _engagement(users: dict, visits: dict, completed: dict, reference: dt.date, at_risk_days: int) -> list[dict]:
    """Per member as of ``reference``: recent activity and the at-risk rule (>= 4 workouts in
    the 30 days up to the last activity, then ``at_risk_days`` days or more without any)."""
    members = set(users) | {uid for uid, _, _ in completed}
    by_mac = defaultdict(list)
    for (mac, _, login), _ in visits.items():
        by_mac[mac].append(_ts(login))
    starts = defaultdict(list)
    for (uid, _, _), (start, _) in completed.items():
        starts[uid].append(_ts(start))
    out = []
    for uid in members:
        mac = users[uid]["mac_address"] if uid in users else None
        seen = [t for t in by_mac.get(mac, []) if t.date() <= reference]
        trained = [t for t in starts.get(uid, []) if t.date() <= reference]
        ago = [(reference - t.date()).days for t in seen], [(reference - t.date()).days for t in trained]
        days = [t.date() for t in seen + trained]
        last_day = max(days) if days else None
        before = sum(1 for t in trained if last_day is not None and (last_day - t.date()).days < 30)
        inactive = None if last_day is None else (reference - last_day).days
        out.append({
            "user_id": uid, "reference_date": reference, "last_visit": max(seen) if seen else None,
            "last_workout": max(trained) if trained else None,
            "visits_7d": sum(a < 7 for a in ago[0]), "visits_30d": sum(a < 30 for a in ago[0]),
            "workouts_7d": sum(a < 7 for a in ago[1]), "workouts_30d": sum(a < 30 for a in ago[1]),
            "days_inactive": inactive, "workouts_before_lapse": before, "at_risk_after_days": at_risk_days,
            "at_risk": inactive is not None and inactive >= at_risk_days and before >= 4,
        })
    return out


def _max_hr(dob: dt.date | None, day: dt.date) -> int | None:
    """220 - age in whole years at ``day``; None without a date of birth or an age outside 0-120."""
    if dob is None:
        return None
    age = day.year - dob.year - ((day.month, day.day) < (dob.month, dob.day))
    return 220 - age if 0 <= age <= 120 else None


def _workout_readings(users: dict, by_device: dict, uid: int, start: int, end: int) -> list[tuple[int, float]]:
    """The (time, heart rate) readings of the member's device inside (start, end], in time order."""
    if uid not in users:
        return []
    return sorted((t, hr) for t, hr in by_device[users[uid]["device_id"]] if start < t <= end)


def _zone_micros(readings: list[tuple[int, float]], start: int, max_hr: int) -> list[int]:
    """Microseconds per zone 0-5 (zone k from (40 + 10k) % of max HR), each reading standing for
    the time since the previous one (the start for the first)."""
    zones, previous = [0] * 6, start
    for t, hr in readings:
        zones[max([0] + [k for k, tenths in enumerate((5, 6, 7, 8, 9), 1) if hr * 10 >= tenths * max_hr])] += (
            t - previous)
        previous = t
    return zones


def _zones(users: dict, completed: dict, by_device: dict, dob: dict) -> list[dict]:
    """Per completed workout with readings: readings, their sum and peak, microseconds per zone."""
    out = []
    for (uid, wid, sid), (start, end) in completed.items():
        readings = _workout_readings(users, by_device, uid, start, end)
        if not readings:
            continue
        max_hr = _max_hr(dob.get(uid), _ts(start).date())
        zones = [None] * 6 if max_hr is None else _zone_micros(readings, start, max_hr)
        out.append({"user_id": uid, "workout_id": wid, "session_id": sid, "start_time": _ts(start),
                    "end_time": _ts(end), "readings": len(readings), "heartrate_sum": sum(hr for _, hr in readings),
                    "max_bpm": max(hr for _, hr in readings)} | {f"zone{k}_micros": zones[k] for k in range(1, 6)})
    return out


def _performance(users: dict, completed: dict, by_device: dict, dob: dict) -> list[dict]:
    """Per member and `%U` week of the start date: workouts, minutes, readings, heart rate and
    minutes per zone (max HR = 220 - age at the workout's date; zone k from (40 + 10k) %)."""
    weeks: dict[tuple, dict] = {}
    for (uid, _, _), (start, end) in completed.items():
        day = _ts(start).date()
        key = (uid, day.year, int(day.strftime("%U")))
        week = weeks.setdefault(key, {"workouts": 0, "micros": 0, "with": 0, "hrs": [], "zones": None,
                                      "start": max(day - dt.timedelta(days=(day.weekday() + 1) % 7),
                                                   dt.date(day.year, 1, 1))})
        week["workouts"] += 1
        week["micros"] += end - start
        readings = _workout_readings(users, by_device, uid, start, end)
        if not readings:
            continue
        week["with"] += 1
        week["hrs"] += [hr for _, hr in readings]
        max_hr = _max_hr(dob.get(uid), day)
        if max_hr is None:
            continue
        week["zones"] = [a + b for a, b in zip(week["zones"] or [0] * 6, _zone_micros(readings, start, max_hr),
                                               strict=True)]
    out = []
    for (uid, year, week_no), w in weeks.items():
        hrs = w["hrs"]
        row = {"user_id": uid, "year": year, "week": week_no, "week_part": f"{year}-{week_no}",
               "week_start": w["start"], "workouts": w["workouts"], "minutes_exercising": w["micros"] / 60e6,
               "workouts_with_readings": w["with"], "readings": len(hrs),
               "avg_bpm": sum(hrs) / len(hrs) if hrs else None, "max_bpm": max(hrs) if hrs else None}
        for k in range(1, 6):
            row[f"zone{k}_minutes"] = None if w["zones"] is None else w["zones"][k] / 60e6
        out.append(row)
    return out
