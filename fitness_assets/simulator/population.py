"""The simulated members: identities, registration, and the profile changes (CDC) of each.

This is the only state the generator keeps for the whole run: a few objects per member,
never per reading.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fitness_assets.simulator.config import PRE_REGISTERED_SHARE, SimulatorConfig

USER_ID_BASE = 100_000
DEVICE_ID_BASE = 500_000
#: Devices nobody registered send readings under ids from here on.
UNREGISTERED_DEVICE_BASE = 900_000

FIRST_NAMES = tuple(
    (
        "Aaron Abigail Carlos Chloe David Diana Ethan Fatima George Hannah Isaac Julia "
        "Kevin Laura Mason Nora Oliver Priya Quinn Rosa Samuel Tara Umar Valerie William "
        "Xena Yusuf Zoe"
    ).split()
)
LAST_NAMES = tuple(
    (
        "Anderson Brown Chen Davis Evans Fischer Garcia Huang Ivanov Johnson Kim Lopez "
        "Martin Nguyen O'Brien Patel Quintero Rossi Smith Taylor Usman Valdez Williams Xu "
        "Young Zimmer"
    ).split()
)
STREETS = ("Main St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln", "Elm St", "Lake View Blvd")
CITIES = (
    ("Seattle", "WA", 98101),
    ("Portland", "OR", 97201),
    ("Denver", "CO", 80202),
    ("Austin", "TX", 78701),
    ("Chicago", "IL", 60601),
    ("Boston", "MA", 2108),
    ("Atlanta", "GA", 30303),
    ("Phoenix", "AZ", 85003),
    ("Miami", "FL", 33130),
    ("San Jose", "CA", 95112),
)
#: Age ranges (years at the start date) drawn uniformly, so every age bin of ``user_bins``
#: is populated, including under 18 and 95+.
AGE_RANGES = ((12, 17), (18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 74), (75, 84), (85, 94), (95, 102))
#: One member in this many gets two changes with the same timestamp.
TIE_EVERY = 20


def number(sec: int, quarter: int) -> int | float:
    """A time as written: whole seconds as an integer, else a decimal with quarter seconds
    (exact in binary floating point, so every format of one instant compares equal)."""
    return sec if quarter == 0 else sec + quarter / 4


@dataclass
class Change:
    """One ``user_info`` record of a member: its time, payload, and delivery."""

    sec: int
    quarter: int
    update_type: str
    payload: dict[str, Any]
    #: Stream position: -1 before the first day, a day index, or ``days`` after the last.
    emit_day: int
    batch: int = 0
    #: Shares its timestamp with the change just before it (which has the lower offset).
    tie: bool = False
    #: Delivered before an older change of the member (see :func:`out_of_order_updates`).
    out_of_order: bool = False

    @property
    def time(self) -> float:
        """The change's own time in epoch seconds."""
        return self.sec + self.quarter / 4


@dataclass
class Member:
    """A registered member and their one wearable device."""

    index: int
    user_id: int
    device_id: int
    mac_address: str
    registration_sec: int
    registration_quarter: int
    #: -1 when registered before the first simulated day.
    registration_day: int
    late_registration: bool
    registration_batch: int
    home_gym: int
    #: The member's changes in emission (offset) order.
    changes: list[Change] = field(default_factory=list)
    sessions: int = 0


def quarter(rng: random.Random) -> int:
    """Fraction of a timestamp in quarter seconds: whole seconds half of the time."""
    return 0 if rng.random() < 0.5 else rng.randint(1, 3)


def _count(rate: float, population: int) -> int:
    """How many of ``population`` get a member-level feature: at least one if rate > 0."""
    if rate <= 0 or population == 0:
        return 0
    return min(population, max(1, round(rate * population)))


def _profile(rng: random.Random, start: dt.date) -> dict[str, Any]:
    low, high = rng.choice(AGE_RANGES)
    age_days = int((rng.randint(low, high) + rng.random()) * 365.25)
    dob = start - dt.timedelta(days=age_days)
    sex = rng.choice(("M", "F"))
    gender = sex if rng.random() < 0.9 else rng.choice(("M", "F", "X"))
    first = rng.choice(FIRST_NAMES)
    city, state, zip_base = rng.choice(CITIES)
    return {
        "dob": dob.strftime("%m/%d/%Y"),
        "sex": sex,
        "gender": gender,
        "first_name": first,
        "last_name": rng.choice(LAST_NAMES),
        "address": {
            "street_address": f"{rng.randint(1, 9999)} {rng.choice(STREETS)}",
            "city": city,
            "state": state,
            "zip": zip_base + rng.randint(0, 40),
        },
    }


def _changed(profile: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The profile after a move (new city), a new street in the same city, or a new name."""
    new = {**profile, "address": dict(profile["address"])}
    kind = rng.random()
    if kind < 0.4:
        city, state, zip_base = rng.choice(CITIES)
        new["address"].update(city=city, state=state, zip=zip_base + rng.randint(0, 40))
    if kind < 0.7:
        new["address"]["street_address"] = f"{rng.randint(1, 9999)} {rng.choice(STREETS)}"
    else:
        new["last_name"] = rng.choice([n for n in LAST_NAMES if n != profile["last_name"]])
    return new


def _payload(user_id: int, update_type: str, time: int | float, profile: dict[str, Any] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"user_id": user_id, "update_type": update_type, "timestamp": time}
    if profile is not None:
        payload.update(profile)
    return payload


def _mac(rng: random.Random, taken: set[str]) -> str:
    while True:
        octets = [rng.randrange(256) for _ in range(6)]
        octets[0] &= 0xFE  # unicast, like a real device
        mac = ":".join(f"{o:02x}" for o in octets)
        if mac not in taken:
            taken.add(mac)
            return mac


def build_members(config: SimulatorConfig, rng: random.Random, batch_of: Callable[[int], int]) -> list[Member]:
    """Create every member with registration and profile changes, delivery batches included.

    ``batch_of`` maps a time (epoch seconds) to the batch a record of that time lands in
    under the configured split. Changes of one member get distinct timestamps, except the
    deliberate ties; a chosen share of updates is produced before an older change (lower
    offset) and, with several batches, delivered in an earlier batch than it.
    """
    start = dt.date.fromisoformat(config.start_date)
    t0 = config.start_epoch
    last_batch = config.batches - 1
    members: list[Member] = []
    macs: set[str] = set()
    profiles: list[dict[str, Any]] = []
    for i in range(config.members):
        if rng.random() < PRE_REGISTERED_SHARE:
            day = -1
            reg_sec = t0 - rng.randint(3600, 30 * 86400)
        else:
            day = rng.randrange(config.days)
            reg_sec = t0 + day * 86400 + rng.randint(5 * 3600, 5 * 3600 + 1800)
        members.append(
            Member(
                index=i,
                user_id=USER_ID_BASE + i,
                device_id=DEVICE_ID_BASE + i,
                mac_address=_mac(rng, macs),
                registration_sec=reg_sec,
                registration_quarter=quarter(rng),
                registration_day=day,
                late_registration=False,
                registration_batch=0,
                home_gym=rng.randint(1, config.gyms),
            )
        )
        profiles.append(_profile(rng, start))

    late = set(rng.sample(range(config.members), _count(config.late_registration_rate, config.members)))
    deleted = set(rng.sample(range(config.members), _count(config.delete_rate, config.members)))
    keep = [i for i in range(config.members) if i not in deleted] or list(range(config.members))
    ties = set(rng.sample(keep, min(len(keep), max(1, round(config.members / TIE_EVERY)))))

    for member, profile in zip(members, profiles, strict=True):
        member.late_registration = member.index in late
        member.registration_batch = last_batch if member.late_registration else batch_of(member.registration_sec)
        reg_q = member.registration_quarter
        new = Change(
            member.registration_sec,
            reg_q,
            "new",
            _payload(member.user_id, "new", number(member.registration_sec, reg_q), profile),
            member.registration_day,
        )
        changes = [new]
        first_day = max(member.registration_day, 0)
        updates = 2 if member.index in ties else rng.randint(0, 2)
        times = sorted(
            (rng.randrange(first_day, config.days), rng.randint(6 * 3600, 22 * 3600 - 1), quarter(rng))
            for _ in range(updates)
        )
        previous = -1.0
        for day, second, q in times:
            sec = t0 + day * 86400 + second
            if sec + q / 4 <= previous:  # keep one member's timestamps distinct
                sec = int(previous) + 1
            previous = sec + q / 4
            profile = _changed(profile, rng)
            changes.append(Change(sec, q, "update", _payload(member.user_id, "update", number(sec, q), profile), day))
        if member.index in ties:
            first_update, second_update = changes[1], changes[2]
            second_update.sec, second_update.quarter = first_update.sec, first_update.quarter
            second_update.emit_day = first_update.emit_day
            second_update.payload["timestamp"] = first_update.payload["timestamp"]
            second_update.tie = True
        if member.index in deleted:
            sec = config.end_epoch - 1800 + rng.randint(0, 1500)
            q = quarter(rng)
            body = None if rng.random() < 0.5 else {k: None for k in profile}
            changes.append(
                Change(sec, q, "delete", _payload(member.user_id, "delete", number(sec, q), body), config.days)
            )
        for change in changes:
            change.batch = batch_of(change.sec)
        if member.index in ties:
            changes[2].batch = changes[1].batch
        member.changes = changes
    _reorder(members, config, rng)
    for member in members:
        late_updates = out_of_order_updates(member)
        for change in member.changes:
            change.out_of_order = any(change is late for late in late_updates)
    return members


def _reorder(members: list[Member], config: SimulatorConfig, rng: random.Random) -> None:
    """Produce a share of updates before the older change preceding them, and with several
    batches deliver them in an earlier batch than it."""
    rate = config.profile_out_of_order_rate
    if rate <= 0:
        return
    eligible = [
        (member, k)
        for member in members
        if not any(change.tie for change in member.changes)
        for k, change in enumerate(member.changes)
        if change.update_type == "update"
    ]
    chosen = [item for item in eligible if rng.random() < rate]
    if not chosen and eligible:
        chosen = [eligible[0]]
    last = config.batches - 1
    # Indices refer to time order; swapping moves the update one place earlier in emission.
    by_member: dict[int, list[int]] = {}
    for member, k in chosen:
        by_member.setdefault(member.index, []).append(k)
    for member in members:
        ks = by_member.get(member.index)
        if not ks:
            continue
        order = list(member.changes)
        for k in ks:
            update = member.changes[k]
            pos = order.index(update)
            older = order[pos - 1]
            order[pos - 1], order[pos] = update, older
            update.emit_day = older.emit_day
            if last == 0 or update.batch < older.batch:
                continue
            if older.batch > 0:
                update.batch = rng.randrange(0, older.batch)
            elif update.batch < last:
                older.batch = rng.randint(update.batch + 1, last)
            else:
                update.batch = rng.randrange(0, last)
                older.batch = last
        member.changes = order


def out_of_order_updates(member: Member) -> list[Change]:
    """Updates delivered before an older change of the same member: in an earlier batch, or
    in the same batch at a lower offset."""
    late: list[Change] = []
    for pos, change in enumerate(member.changes):
        if change.update_type != "update":
            continue
        for other_pos, other in enumerate(member.changes):
            if other.time < change.time and (other.batch, other_pos) > (change.batch, pos):
                late.append(change)
                break
    return late
