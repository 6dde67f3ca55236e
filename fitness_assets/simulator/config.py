"""Configuration of the fitness-centre simulator, and the expected data volume it implies.

The behavioural constants below are part of the model, not knobs: they shape the activity of
simulated members (how often they rest, when the gyms are open) and are shared by the
generator and by :meth:`SimulatorConfig.expected_readings`, which must agree with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

SPLITS = ("time", "random")

#: Share of members registered before the first simulated day; the others register on a
#: uniformly chosen simulated day, before their first activity of that day.
PRE_REGISTERED_SHARE = 0.7
#: Chance that a registered member rests on a given day (no workout).
REST_DAY_SHARE = 0.2
#: Workouts start in [06:00, 21:30) UTC; each gets a slot of at least its maximum duration
#: plus this much room for the gym visit around it.
WORKOUT_WINDOW_START = 6 * 3600
WORKOUT_WINDOW_END = 21 * 3600 + 1800
SLOT_MARGIN_SECONDS = 30 * 60
MAX_WORKOUTS_PER_DAY = 6
#: Chance that a workout is preceded by a few device readings taken just before its start.
PRESTART_READINGS_SHARE = 0.3
MAX_PRESTART_READINGS = 5
PRESTART_MAX_SPAN_SECONDS = 600
#: A workout is "completed" when its stop comes at most this long after its start.
COMPLETION_LIMIT_SECONDS = 3 * 3600
LONG_SESSION_RATE = 0.02
MISSING_STOP_RATE = 0.02
#: Share of a member-day's last workouts whose stop comes exactly at the 3-hour limit.
BOUNDARY_STOP_SHARE = 0.01
#: Share of records that, with the "time" split, arrive one or two batches late.
LATE_RECORD_RATE = 0.02
#: Fields of :class:`SimulatorConfig` that are fractions in [0, 1].
RATE_FIELDS = (
    "duplicate_rate",
    "malformed_rate",
    "wrong_type_rate",
    "missing_field_rate",
    "unregistered_device_rate",
    "out_of_range_rate",
    "late_registration_rate",
    "profile_out_of_order_rate",
    "delete_rate",
    "seconds_timestamp_rate",
    "iso_time_rate",
    "open_logout_rate",
)
#: Largest user population the id scheme supports (user ids 100000+i, devices 500000+i).
MAX_MEMBERS = 400_000


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that determines a simulated landing zone; equal configs give equal bytes.

    Rates are fractions of the records of the relevant kind (0 disables). The anomalies that
    the consumer must quarantine (``malformed_rate``, ``wrong_type_rate``,
    ``missing_field_rate``) are *extra* lines next to the valid records, so they never remove
    data; every other rate describes valid records that must reach bronze. Whenever a rate is
    positive, the simulation contains at least one instance of it (rounded up), so tiny runs
    still exercise every case.
    """

    seed: int = 42
    members: int = 20
    gyms: int = 3
    days: int = 2
    start_date: str = "2023-03-06"
    workouts_per_member_day: float = 1.0
    workout_minutes: tuple[int, int] = (5, 20)
    bpm_interval_seconds: int = 1
    batches: int = 1
    split: str = "time"
    max_lines_per_file: int = 200_000
    duplicate_rate: float = 0.01
    malformed_rate: float = 0.005
    wrong_type_rate: float = 0.005
    missing_field_rate: float = 0.005
    unregistered_device_rate: float = 0.01
    out_of_range_rate: float = 0.01
    late_registration_rate: float = 0.1
    profile_out_of_order_rate: float = 0.2
    delete_rate: float = 0.05
    seconds_timestamp_rate: float = 0.05
    iso_time_rate: float = 0.05
    open_logout_rate: float = 0.3

    def __post_init__(self) -> None:
        # Accept lists for the tuple field so configs survive a JSON round trip.
        object.__setattr__(self, "workout_minutes", tuple(self.workout_minutes))
        low, high = self.workout_minutes
        problems = []
        if not 1 <= self.members <= MAX_MEMBERS:
            problems.append(f"members must be in 1..{MAX_MEMBERS}")
        for name in ("gyms", "days", "bpm_interval_seconds", "batches", "max_lines_per_file"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not 1 <= low <= high <= 180:
            problems.append("workout_minutes must satisfy 1 <= min <= max <= 180")
        if self.workouts_per_member_day < 0:
            problems.append("workouts_per_member_day must be >= 0")
        if self.split not in SPLITS:
            problems.append(f"split must be one of {SPLITS}")
        for name in RATE_FIELDS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        try:
            dt.date.fromisoformat(self.start_date)
        except ValueError:
            problems.append("start_date must be an ISO date (YYYY-MM-DD)")
        if problems:
            raise ValueError("invalid SimulatorConfig: " + "; ".join(problems))

    @property
    def start_epoch(self) -> int:
        """Epoch seconds of 00:00 UTC on the first simulated day."""
        start = dt.datetime.fromisoformat(self.start_date).replace(tzinfo=dt.UTC)
        return int(start.timestamp())

    @property
    def end_epoch(self) -> int:
        """Epoch seconds of the end (exclusive) of the last simulated day."""
        return self.start_epoch + 86400 * self.days

    def replace(self, **changes: Any) -> SimulatorConfig:
        """A copy of this config with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (the tuple becomes a list)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out["workout_minutes"] = list(self.workout_minutes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatorConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    @classmethod
    def tiny(cls, **overrides: Any) -> SimulatorConfig:
        """Five members in one gym for one day with short workouts: a few thousand lines.

        Every positive rate still shows up at least once, so tiny runs exercise every case.
        """
        values: dict[str, Any] = {"members": 5, "gyms": 1, "days": 1, "workout_minutes": (2, 4)}
        values.update(overrides)
        return cls(**values)

    @classmethod
    def scaled(cls, readings: int, **overrides: Any) -> SimulatorConfig:
        """A config whose expected number of bpm readings is close to ``readings``.

        Days grow with the volume (1 day up to 20k readings, 4 weeks beyond 20M) and members
        fill the rest; ``members`` or ``days`` given in ``overrides`` are kept and the other
        one is solved for. Gyms grow with members (one per 100, at least 3) unless given.
        """
        if readings < 1:
            raise ValueError("readings must be >= 1")
        base = cls(**overrides)
        if "members" in overrides and "days" in overrides:
            return base
        if "members" in overrides:
            # Readings grow linearly with the expected active days per member.
            per_active_day = base.replace(days=1).expected_readings()
            active_days = readings / per_active_day if per_active_day else 1.0
            slope = PRE_REGISTERED_SHARE + (1 - PRE_REGISTERED_SHARE) / 2
            days = min(3650, max(1, round((active_days - (1 - slope)) / slope)))
            members = base.members
        else:
            if "days" in overrides:
                days = base.days
            elif readings < 20_000:
                days = 1
            elif readings < 200_000:
                days = 3
            elif readings < 2_000_000:
                days = 7
            elif readings < 20_000_000:
                days = 14
            else:
                days = 28
            per_member = base.replace(members=1, days=days).expected_readings()
            members = min(MAX_MEMBERS, max(1, round(readings / per_member)))
        gyms = overrides.get("gyms", max(3, members // 100))
        return base.replace(members=members, days=days, gyms=gyms)

    def expected_active_days(self) -> float:
        """Expected number of simulated days on which a member is registered."""
        days = self.days
        return PRE_REGISTERED_SHARE * days + (1 - PRE_REGISTERED_SHARE) * (days + 1) / 2

    def workouts_per_active_day(self) -> float:
        """Expected workouts of a registered member on one day (rest days included)."""
        mean = self.workouts_per_member_day
        if mean <= 0:
            return 0.0
        cap = self.max_workouts_per_day()
        on_active = mean / (1.0 - REST_DAY_SHARE)
        low = math.floor(on_active)
        frac = on_active - low
        expected = (1.0 - frac) * min(low, cap) + frac * min(low + 1, cap)
        return (1.0 - REST_DAY_SHARE) * expected

    def max_workouts_per_day(self) -> int:
        """How many workouts fit in one day's schedule given the longest duration."""
        slot = self.workout_minutes[1] * 60 + SLOT_MARGIN_SECONDS
        fits = (WORKOUT_WINDOW_END - WORKOUT_WINDOW_START) // slot
        return max(1, min(MAX_WORKOUTS_PER_DAY, fits))

    def prestart_readings_cap(self) -> int:
        """Largest number of readings taken just before a workout's start."""
        return min(MAX_PRESTART_READINGS, PRESTART_MAX_SPAN_SECONDS // self.bpm_interval_seconds + 1)

    def expected_readings(self) -> float:
        """Expected number of distinct bpm readings the simulation produces.

        Mirrors the generator's model: active member-days times workouts per day times
        readings per workout (one per interval over the duration, plus occasional readings just
        before the start), plus the extra readings of unregistered devices. Duplicated lines
        are not readings. Exact in expectation up to a handful of readings forced to exist.
        """
        active_days = self.expected_active_days()
        low, high = self.workout_minutes[0] * 60, self.workout_minutes[1] * 60
        interval = self.bpm_interval_seconds
        total_floor = sum(d // interval for d in range(low, high + 1))
        per_workout = total_floor / (high - low + 1)
        per_workout += PRESTART_READINGS_SHARE * (1 + self.prestart_readings_cap()) / 2
        member_readings = self.members * active_days * self.workouts_per_active_day() * per_workout
        return member_readings * (1.0 + self.unregistered_device_rate)
