"""Deterministic simulator of a fitness-centre chain that writes landing-zone files.

The simulation is one seeded stream of records, generated day by day and member by member:
registrations and profile changes, gym visits, workout start/stop events and heart-rate
readings. Each record is labelled with the batch it is delivered in (by time, or at random)
and written to that batch's files. Writing one batch replays the whole stream and keeps
only that batch's lines, so any batch can be (re)written alone and comes out byte-identical
to the same batch of a full run, while memory stays bounded by the number of members.

File formats follow ``data-contract.md`` §1; the lines the consumer must quarantine and the
reasons it must give are described in :mod:`fitness_assets.simulator.anomalies`.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import random
import time
import zlib
from pathlib import Path
from typing import Any

from fitness_assets.simulator.anomalies import (
    CSV_GROUPS,
    KAFKA_GROUPS,
    bad_csv_line,
    bad_kafka_line,
    dumps,
    kafka_groups_for,
    kafka_line,
)
from fitness_assets.simulator.config import (
    BOUNDARY_STOP_SHARE,
    COMPLETION_LIMIT_SECONDS,
    LATE_RECORD_RATE,
    LONG_SESSION_RATE,
    MISSING_STOP_RATE,
    PRESTART_READINGS_SHARE,
    REST_DAY_SHARE,
    SLOT_MARGIN_SECONDS,
    WORKOUT_WINDOW_END,
    WORKOUT_WINDOW_START,
    SimulatorConfig,
)
from fitness_assets.simulator.population import (
    UNREGISTERED_DEVICE_BASE,
    Change,
    Member,
    build_members,
    number,
    quarter,
)
from fitness_assets.simulator.truth import SOURCES, BatchTruth, Counts, SourceTruth, Truth
from fitness_assets.simulator.writer import BatchWriter, LandedFileDiffers, check_publishable

__all__ = ["BatchTruth", "Simulator", "SimulatorConfig", "Truth", "simulate"]

REGISTERED_HEADER = "user_id,device_id,mac_address,registration_timestamp"
GYM_HEADER = "mac_address,gym,login,logout"
KAFKA_PARTITIONS = 4
#: A duplicate is written this many records of its source after its original, at most.
DUPLICATE_SPREAD = {"registered_users": 20, "gym_logins": 200, "kafka_multiplex": 5000}
#: Share of a member's active days with an extra gym visit without workout (evening).
EXTRA_VISIT_SHARE = 0.1
#: Share of workouts whose bpm records carry a null Kafka key.
NULL_KEY_SHARE = 0.03
NEVER = 1 << 62

_SUFFIX = ("", ".25", ".5", ".75")
_ISO_SUFFIX = ("Z", ".250Z", ".500Z", ".750Z")
#: Heart rates are kept in tenths; the text of h/10 as json.dumps writes it.
_HEARTRATE_TEXT = tuple(f"{h // 10}.{h % 10}" for h in range(2000))
_HR_LOW, _HR_HIGH = 550, 1900


def partition_of(key: str) -> int:
    """Kafka partition of a key: stable across processes, unlike ``hash()``."""
    return zlib.crc32(key.encode()) % KAFKA_PARTITIONS


def iso_time(sec: int, quarter_: int) -> str:
    """ISO-8601 UTC text of a time, with milliseconds only when it has a fraction."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + _ISO_SUFFIX[quarter_]


class _Sparse:
    """A Bernoulli process of probability ``rate`` per call, drawn as geometric gaps so that
    rare events cost one decrement per record rather than one random number."""

    __slots__ = ("_log", "left", "rate", "rng")

    def __init__(self, rate: float, rng: random.Random, first_within: int | None = None) -> None:
        self.rate = rate
        self.rng = rng
        self._log = math.log1p(-rate) if 0 < rate < 1 else 0.0
        self.left = self._gap()
        if first_within and rate > 0:
            self.left = min(self.left, rng.randint(1, first_within))

    def _gap(self) -> int:
        if self.rate <= 0:
            return NEVER
        if self.rate >= 1:
            return 1
        return 1 + int(math.log(1.0 - self.rng.random()) / self._log)

    def __call__(self) -> bool:
        self.left -= 1
        if self.left:
            return False
        self.left = self._gap()
        return True


class _Batcher:
    """Chooses the batch a record is delivered in.

    ``time`` split: batches are consecutive equal slices of the simulated period (earlier
    records in batch 0, later ones in the last), and a small share of records arrives one or
    two batches late. ``random`` split: every record goes to a uniformly random batch.
    """

    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self.rng = rng
        self.batches = config.batches
        self.last = config.batches - 1
        self.t0 = config.start_epoch
        self.scale = config.batches / (config.end_epoch - config.start_epoch)
        self.random_split = config.split == "random"
        late_rate = LATE_RECORD_RATE if self.last and not self.random_split else 0.0
        self.late = _Sparse(late_rate, rng)

    def natural(self, sec: float) -> int:
        """Batch of a record of time ``sec``, never late."""
        if not self.last:
            return 0
        if self.random_split:
            return int(self.rng.random() * self.batches)
        return min(self.last, max(0, int((sec - self.t0) * self.scale)))

    def __call__(self, sec: float) -> int:
        """Batch of a record of time ``sec``, possibly late."""
        batch = self.natural(sec)
        if batch < self.last and not self.random_split and self.late():
            batch = min(self.last, batch + 1 + (self.rng.random() < 0.3))
        return batch

    def not_before(self, batch: int) -> int:
        """Batch of a copy of a record delivered in ``batch``: the same or a later one."""
        if batch == self.last:
            return batch
        if self.random_split:
            return self.rng.randint(batch, self.last)
        return batch if self.rng.random() < 0.6 else min(self.last, batch + 1 + (self.rng.random() < 0.3))

    def after(self, batch: int) -> int | None:
        """A batch strictly after ``batch``, or None when ``batch`` is the last one."""
        if batch == self.last:
            return None
        if self.random_split:
            return self.rng.randint(batch + 1, self.last)
        return min(self.last, batch + 1 + (self.rng.random() < 0.3))


class _Run:
    """One pass over the simulated stream, writing the batches in ``active``."""

    def __init__(self, config: SimulatorConfig, root: Path, active: set[int]) -> None:
        self.config = config
        self.root = root
        seed = config.seed
        self.rng = random.Random(f"{seed}:activity")
        self.bad_rng = random.Random(f"{seed}:anomalies")
        self.batcher = _Batcher(config, random.Random(f"{seed}:batches"))
        self.members = build_members(
            config,
            random.Random(f"{seed}:population"),
            _Batcher(config, random.Random(f"{seed}:profile-batches")).natural,
        )
        self.counts = [Counts() for _ in range(config.batches)]
        self.writers: dict[str, list[BatchWriter]] = {}
        for source, extension, header in (
            ("registered_users", ".csv", REGISTERED_HEADER),
            ("gym_logins", ".csv", GYM_HEADER),
            ("kafka_multiplex", ".json", None),
        ):
            mode = self._seconds_mode if source == "kafka_multiplex" else None
            self.writers[source] = [
                BatchWriter(
                    root / source if b in active else None,
                    source,
                    b,
                    extension,
                    header,
                    config.max_lines_per_file,
                    mode,
                )
                for b in range(config.batches)
            ]
        self.offsets = {topic: [0] * KAFKA_PARTITIONS for topic in ("user_info", "workout", "bpm")}
        self.user_partition = [partition_of(str(m.user_id)) for m in self.members]
        self.device_partition = [partition_of(str(m.device_id)) for m in self.members]
        self.unregistered_last = [0] * max(1, config.members // 10)

        bad_rate = config.malformed_rate + config.missing_field_rate + config.wrong_type_rate
        self.emitted = dict.fromkeys(SOURCES, 0)
        self.pending: dict[str, list[tuple[int, int, int, str, str | None]]] = {s: [] for s in SOURCES}
        self.duplicate = {s: _Sparse(config.duplicate_rate, self.bad_rng) for s in SOURCES}
        self.anomaly = {s: _Sparse(bad_rate, self.bad_rng) for s in SOURCES}
        self.groups_written: dict[tuple[str, str], int] = {}
        self.last_line: dict[str, tuple[str, str | None, int]] = {}
        self.last_csv: dict[str, tuple[list[str], int]] = {}
        self.last_payload: dict[str, tuple[str | None, dict[str, Any], int, int]] = {}

        self.iso = _Sparse(config.iso_time_rate, self.rng)
        self.out_of_range = _Sparse(config.out_of_range_rate, self.rng)
        self.unregistered = _Sparse(config.unregistered_device_rate, self.rng)
        self.open_logout = _Sparse(config.open_logout_rate, self.rng, first_within=3)
        self.long_session = _Sparse(LONG_SESSION_RATE, self.rng, first_within=3)
        self.missing_stop = _Sparse(MISSING_STOP_RATE, self.rng, first_within=4)
        self.iso_written = self.out_of_range_written = self.unregistered_written = 0
        self.open_written = 0

    # ---------------------------------------------------------------- file plumbing

    def _seconds_mode(self, batch: int, part: int) -> bool:
        rate = self.config.seconds_timestamp_rate
        if rate <= 0:
            return False
        if batch == self.config.batches - 1 and part == 0 and batch > 0:
            return True  # at least one such file whenever there are several batches
        digest = zlib.crc32(f"{self.config.seed}:{batch}:{part}".encode())
        return digest / 2**32 < rate

    def _offset(self, topic: str, partition: int) -> int:
        offsets = self.offsets[topic]
        offset = offsets[partition]
        offsets[partition] = offset + 1
        return offset

    def _after_record(self, source: str, line: str, topic: str | None, batch: int) -> None:
        """Schedule a duplicate of a valid line, and write the duplicates now due."""
        count = self.emitted[source] + 1
        self.emitted[source] = count
        if self.duplicate[source]():
            release = count + self.bad_rng.randint(1, DUPLICATE_SPREAD[source])
            target = self.batcher.not_before(batch)
            heapq.heappush(self.pending[source], (release, count, target, line, topic))
        pending = self.pending[source]
        while pending and pending[0][0] <= count:
            self._write_duplicate(source, heapq.heappop(pending))

    def _write_duplicate(self, source: str, item: tuple[int, int, int, str, str | None]) -> None:
        _, _, batch, line, topic = item
        self.writers[source][batch].write(line, topic=topic)
        duplicates = self.counts[batch].duplicates
        duplicates[source] = duplicates.get(source, 0) + 1

    def _pick_group(self, groups: dict[str, tuple[str, ...]]) -> str:
        rates = [(getattr(self.config, rate), names) for rate, names in groups.items()]
        point = self.bad_rng.random() * sum(rate for rate, _ in rates)
        for rate, names in rates:
            if point < rate:
                return self.bad_rng.choice(names)
            point -= rate
        return self.bad_rng.choice(rates[-1][1])

    def _count_group(self, source: str, group: str) -> None:
        key = (source, group)
        self.groups_written[key] = self.groups_written.get(key, 0) + 1

    # ---------------------------------------------------------------- CSV records

    def _csv(self, source: str, values: list[str], batch: int, lane: int = 0) -> None:
        line = ",".join(values) + "\n"
        self.writers[source][batch].write(line, lane=lane)
        self.last_line[source] = (line, None, batch)
        self.last_csv[source] = (values, batch)
        if self.anomaly[source]():
            self._bad_csv(source, values, self._pick_group(CSV_GROUPS), batch, lane)
        self._after_record(source, line, None, batch)

    def _bad_csv(self, source: str, values: list[str], group: str, batch: int, lane: int = 0) -> None:
        line, reason = bad_csv_line(source, values, group, self.bad_rng)
        self.writers[source][batch].write(line, reason=reason, lane=lane)
        self._count_group(source, group)

    def _register(self, member: Member) -> None:
        reg = number(member.registration_sec, member.registration_quarter)
        values = [str(member.user_id), str(member.device_id), member.mac_address, str(reg)]
        batch = member.registration_batch
        counts = self.counts[batch]
        counts.members += 1
        counts.devices += 1
        counts.late_registrations += member.late_registration
        self._csv("registered_users", values, batch)

    def _visit(
        self,
        member: Member,
        gym: int,
        login: tuple[int, int],
        logout: tuple[int, int],
        is_open: bool,
    ) -> None:
        """A gym visit: one closed row, or an open row now and the closed row later."""
        login_text = str(number(*login))
        closed = [member.mac_address, str(gym), login_text, str(number(*logout))]
        if is_open:
            batch = self.batcher(login[0])
            self.open_written += 1
            self.counts[batch].open_logouts += 1
            self.counts[batch].gym_visits += 1
            self._csv("gym_logins", [member.mac_address, str(gym), login_text, ""], batch)
            later = self.batcher.after(batch)
            if later is None:
                self._csv("gym_logins", closed, batch, lane=1)
            else:
                self._csv("gym_logins", closed, later)
        else:
            batch = self.batcher(logout[0])
            self.counts[batch].gym_visits += 1
            self._csv("gym_logins", closed, batch)

    # ---------------------------------------------------------------- Kafka records

    def _kafka(
        self,
        topic: str,
        key: str | None,
        partition: int,
        payload: dict[str, Any],
        sec: int,
        quarter_: int,
        batch: int,
    ) -> None:
        offset = self._offset(topic, partition)
        writer = self.writers["kafka_multiplex"][batch]
        ms = sec * 1000 + quarter_ * 250 + offset * 7919 % 2000
        line = kafka_line(key, dumps(payload), topic, partition, offset, ms // 1000 if writer.seconds else ms)
        writer.write(line, topic=topic)
        self.last_line["kafka_multiplex"] = (line, topic, batch)
        self.last_payload[topic] = (key, payload, partition, sec)
        self._kafka_followers(topic, key, payload, partition, sec, batch, line)

    def _kafka_followers(
        self,
        topic: str,
        key: str | None,
        payload: dict[str, Any],
        partition: int,
        sec: int,
        batch: int,
        line: str,
    ) -> None:
        if self.anomaly["kafka_multiplex"]():
            group = self._pick_group(kafka_groups_for(topic, payload))
            self._bad_kafka(group, topic, key, payload, partition, sec, batch)
        self._after_record("kafka_multiplex", line, topic, batch)

    def _bad_kafka(
        self,
        group: str,
        topic: str,
        key: str | None,
        payload: dict[str, Any],
        partition: int,
        sec: int,
        batch: int,
    ) -> None:
        offset = self._offset(topic, partition)
        writer = self.writers["kafka_multiplex"][batch]
        ms = sec * 1000 + offset * 7919 % 2000
        line, reason = bad_kafka_line(
            group, topic, key, payload, partition, offset, ms // 1000 if writer.seconds else ms, self.bad_rng
        )
        writer.write(line, reason=reason)
        self._count_group("kafka_multiplex", group)

    def _profile_change(self, member: Member, change: Change) -> None:
        counts = self.counts[change.batch]
        counts.profile_changes += 1
        counts.profile_deletes += change.update_type == "delete"
        counts.profile_ties += change.tie
        counts.profile_out_of_order += change.out_of_order
        key = str(member.user_id)
        self._kafka(
            "user_info",
            key,
            self.user_partition[member.index],
            change.payload,
            change.sec,
            change.quarter,
            change.batch,
        )

    def _workout_event(
        self, member: Member, workout_id: int, session_id: int, action: str, sec: int, quarter_: int, batch: int
    ) -> None:
        payload = {
            "user_id": member.user_id,
            "workout_id": workout_id,
            "timestamp": number(sec, quarter_),
            "action": action,
            "session_id": session_id,
        }
        self.counts[batch].workout_events += 1
        self._kafka("workout", str(member.user_id), self.user_partition[member.index], payload, sec, quarter_, batch)

    def _unregistered_reading(self, sec: int, batch: int, iso: bool = False, heartrate: Any = None) -> None:
        """A reading from a device nobody registered; times per device strictly increase so
        (device_id, time) stays unique."""
        slot = int(self.rng.random() * len(self.unregistered_last))
        sec = max(sec, self.unregistered_last[slot] + 1)
        self.unregistered_last[slot] = sec
        device = UNREGISTERED_DEVICE_BASE + slot
        if heartrate is None:
            heartrate = self.rng.randint(600, 1800) / 10
        counts = self.counts[batch]
        counts.bpm_readings += 1
        counts.unregistered_device_readings += 1
        self.unregistered_written += 1
        if iso:
            counts.iso_time_readings += 1
            self.iso_written += 1
        payload = {"device_id": device, "time": iso_time(sec, 0) if iso else sec, "heartrate": heartrate}
        self._kafka("bpm", str(device), partition_of(str(device)), payload, sec, 0, batch)

    def _out_of_range_value(self) -> float | None:
        kind = self.rng.randrange(4)
        if kind == 0:
            return 0.0
        if kind == 1:
            return -self.rng.randint(1, 300) / 10
        if kind == 2:
            return self.rng.randint(2205, 2600) / 10
        return None

    def _readings(
        self,
        member: Member,
        first: int,
        quarter_: int,
        count: int,
        heartrate: int,
        null_key: bool,
        base: int | None,
    ) -> tuple[int, int | None]:
        """Write ``count`` readings of the member's device, one interval apart from ``first``.

        ``base`` is, for readings inside a completed workout, the batch in which the workout
        and the registration have all arrived (None otherwise). Returns the heart rate where
        the walk ended and the earliest batch in which a ``workout_bpm`` row exists.
        """
        config = self.config
        step = config.bpm_interval_seconds
        device = str(member.device_id)
        partition = self.device_partition[member.index]
        offsets = self.offsets["bpm"]
        writers = self.writers["kafka_multiplex"]
        counts = self.counts
        batcher = self.batcher
        rnd = self.rng.random
        iso, out_of_range, unregistered = self.iso, self.out_of_range, self.unregistered
        anomaly, duplicate = self.anomaly["kafka_multiplex"], self.duplicate["kafka_multiplex"]
        pending = self.pending["kafka_multiplex"]
        key = "null" if null_key else '"' + device + '"'
        head = '{"key":' + key + ',"value":"{\\"device_id\\":' + device + ',\\"time\\":'
        middle = ',\\"heartrate\\":'
        tail = '}","topic":"bpm","partition":' + str(partition) + ',"offset":'
        suffix = _SUFFIX[quarter_]
        quarter_ms = quarter_ * 250
        single_batch = not batcher.last
        earliest: int | None = None
        emitted = self.emitted["kafka_multiplex"]
        # Rare events are drawn as gaps: for `quiet` readings none of them can fire, so the
        # loop skips their countdowns and settles the skipped calls in one subtraction.
        processes = (out_of_range, iso, anomaly, duplicate, unregistered)
        quiet = skipped = 0
        for k in range(count):
            sec = first + k * step
            heartrate += int(rnd() * 31) - 15
            if heartrate < _HR_LOW:
                heartrate = _HR_LOW
            elif heartrate > _HR_HIGH:
                heartrate = _HR_HIGH
            batch = 0 if single_batch else batcher(sec)
            batch_counts = counts[batch]
            if quiet:
                quiet -= 1
                skipped += 1
                offset = offsets[partition]
                offsets[partition] = offset + 1
                writer = writers[batch]
                ms = sec * 1000 + quarter_ms + offset * 7919 % 2000
                line = (
                    head
                    + str(sec)
                    + suffix
                    + middle
                    + _HEARTRATE_TEXT[heartrate]
                    + tail
                    + str(offset)
                    + ',"timestamp":'
                    + str(ms // 1000 if writer.seconds else ms)
                    + "}\n"
                )
                writer.write(line, None, "bpm")
                batch_counts.bpm_readings += 1
                if base is not None:
                    effective = base if base > batch else batch
                    counts[effective].workout_bpm_readings += 1
                    if earliest is None or effective < earliest:
                        earliest = effective
                emitted += 1
                while pending and pending[0][0] <= emitted:
                    self._write_duplicate("kafka_multiplex", heapq.heappop(pending))
                continue
            if skipped:
                for process in processes:
                    process.left -= skipped
                skipped = 0
            valid = True
            if out_of_range():
                value = self._out_of_range_value()
                valid = value is not None and value > 0
                hr_text = dumps(value)
                batch_counts.out_of_range_readings += 1
                batch_counts.invalid_heartrate_readings += not valid
                self.out_of_range_written += 1
            else:
                value = heartrate / 10
                hr_text = _HEARTRATE_TEXT[heartrate]
            if iso():
                time_value: int | float | str = iso_time(sec, quarter_)
                time_text = '\\"' + time_value + '\\"'
                batch_counts.iso_time_readings += 1
                self.iso_written += 1
            else:
                time_value = sec if not quarter_ else sec + quarter_ / 4
                time_text = str(sec) + suffix
            offset = offsets[partition]
            offsets[partition] = offset + 1
            writer = writers[batch]
            ms = sec * 1000 + quarter_ms + offset * 7919 % 2000
            line = (
                head
                + time_text
                + middle
                + hr_text
                + tail
                + str(offset)
                + ',"timestamp":'
                + str(ms // 1000 if writer.seconds else ms)
                + "}\n"
            )
            writer.write(line, None, "bpm")
            batch_counts.bpm_readings += 1
            if base is not None and valid:
                effective = base if base > batch else batch
                counts[effective].workout_bpm_readings += 1
                if earliest is None or effective < earliest:
                    earliest = effective
            if anomaly():
                payload = {"device_id": member.device_id, "time": time_value, "heartrate": value}
                key_value = None if null_key else device
                group = self._pick_group(kafka_groups_for("bpm", payload))
                self._bad_kafka(group, "bpm", key_value, payload, partition, sec, batch)
            emitted += 1
            if duplicate():
                release = emitted + self.bad_rng.randint(1, DUPLICATE_SPREAD["kafka_multiplex"])
                heapq.heappush(pending, (release, emitted, batcher.not_before(batch), line, "bpm"))
            while pending and pending[0][0] <= emitted:
                self._write_duplicate("kafka_multiplex", heapq.heappop(pending))
            if unregistered():
                self.emitted["kafka_multiplex"] = emitted
                self._unregistered_reading(sec, batch)
                emitted = self.emitted["kafka_multiplex"]
            quiet = min(process.left for process in processes) - 1
        for process in processes:
            process.left -= skipped
        self.emitted["kafka_multiplex"] = emitted
        if count:
            self.last_line["kafka_multiplex"] = (line, "bpm", batch)
        return heartrate, earliest

    # ---------------------------------------------------------------- the day of a member

    def _workouts_today(self) -> int:
        mean = self.config.workouts_per_member_day
        if mean <= 0 or self.rng.random() < REST_DAY_SHARE:
            return 0
        on_active = mean / (1 - REST_DAY_SHARE)
        count = int(on_active) + (self.rng.random() < on_active - int(on_active))
        return min(count, self.config.max_workouts_per_day())

    def _member_day(self, member: Member, day: int) -> None:
        config = self.config
        rng = self.rng
        day0 = config.start_epoch + day * 86400
        low, high = config.workout_minutes[0] * 60, config.workout_minutes[1] * 60
        step = config.bpm_interval_seconds
        workouts = self._workouts_today()
        slot = (WORKOUT_WINDOW_END - WORKOUT_WINDOW_START) / workouts if workouts else 0.0
        for i in range(workouts):
            start = int(day0 + WORKOUT_WINDOW_START + i * slot + rng.random() * (slot - high - SLOT_MARGIN_SECONDS))
            q = quarter(rng)
            duration = rng.randint(low, high)
            long_session = self.long_session()
            missing_stop = self.missing_stop() and not long_session
            completed = not (long_session or missing_stop)
            if long_session:
                stop = start + COMPLETION_LIMIT_SECONDS + rng.randint(1, 7200)
            elif completed and i == workouts - 1 and rng.random() < BOUNDARY_STOP_SHARE:
                # Only a day's last workout: a 3-hour window must not cover another workout.
                stop = start + COMPLETION_LIMIT_SECONDS
            else:
                stop = start + duration
            member.sessions += 1
            session = member.sessions
            workout_id = rng.randint(1, 20)
            gym = member.home_gym if rng.random() < 0.8 else rng.randint(1, config.gyms)
            login = (start - rng.randint(120, 600), quarter(rng))
            logout = (start + duration + rng.randint(120, 600), quarter(rng))
            is_open = self.open_logout()
            null_key = rng.random() < NULL_KEY_SHARE
            heartrate = rng.randint(700, 1500)

            start_batch = self.batcher(start)
            stop_batch = None if missing_stop else self.batcher(stop)
            counts = self.counts[start_batch]
            counts.workouts_started += 1
            counts.workouts_long += long_session
            counts.workouts_without_stop += missing_stop
            base = None
            if completed:
                assert stop_batch is not None
                both = max(start_batch, stop_batch)
                self.counts[both].workouts_completed += 1
                base = max(both, member.registration_batch)

            if is_open:
                self._visit(member, gym, login, logout, True)
            if rng.random() < PRESTART_READINGS_SHARE:
                before = rng.randint(1, config.prestart_readings_cap())
                heartrate, _ = self._readings(member, start - (before - 1) * step, q, before, heartrate, null_key, None)
            self._workout_event(member, workout_id, session, "start", start, q, start_batch)
            _, earliest = self._readings(member, start + step, q, duration // step, heartrate, null_key, base)
            if earliest is not None:
                self.counts[earliest].workouts_with_readings += 1
            if stop_batch is not None:
                self._workout_event(member, workout_id, session, "stop", stop, q, stop_batch)
            if not is_open:
                self._visit(member, gym, login, logout, False)
        if rng.random() < EXTRA_VISIT_SHARE:
            login_sec = day0 + 22 * 3600 + 300 + rng.randint(0, 2100)
            logout_sec = login_sec + rng.randint(300, 1200)
            gym = member.home_gym if rng.random() < 0.8 else rng.randint(1, config.gyms)
            self._visit(member, gym, (login_sec, quarter(rng)), (logout_sec, quarter(rng)), self.open_logout())

    # ---------------------------------------------------------------- the whole stream

    def generate(self) -> None:
        """Write the whole stream: registrations before the period, each day, then the end
        of period (deletes, then one instance of every positive rate still missing)."""
        config = self.config
        for member in self.members:
            if member.registration_day == -1:
                self._register(member)
            for change in member.changes:
                if change.emit_day == -1:
                    self._profile_change(member, change)
        for day in range(config.days):
            for member in self.members:
                if member.registration_day == day:
                    self._register(member)
                for change in member.changes:
                    if change.emit_day == day:
                        self._profile_change(member, change)
                if member.registration_day <= day:
                    self._member_day(member, day)
        for member in self.members:
            for change in member.changes:
                if change.emit_day == config.days:
                    self._profile_change(member, change)
        self._guarantee()
        for source in SOURCES:
            pending = self.pending[source]
            while pending:
                self._write_duplicate(source, heapq.heappop(pending))
        for writers in self.writers.values():
            for writer in writers:
                writer.close()

    def _guarantee(self) -> None:
        """Make every positive rate visible at least once, however small the run."""
        config = self.config
        end = config.end_epoch - 60
        batch = self.batcher.natural(end)
        if config.unregistered_device_rate > 0 and not self.unregistered_written:
            self._unregistered_reading(end, batch)
        if config.iso_time_rate > 0 and not self.iso_written:
            self._unregistered_reading(end, batch, iso=True)
        if config.out_of_range_rate > 0 and not self.out_of_range_written:
            self.out_of_range_written += 1
            self.counts[batch].out_of_range_readings += 1
            self.counts[batch].invalid_heartrate_readings += 1
            self._unregistered_reading(end, batch, heartrate=0.0)
        if config.open_logout_rate > 0 and not self.open_written:
            member = self.members[0]
            login = config.end_epoch - 3000
            self._visit(member, member.home_gym, (login, 0), (login + 600, 0), True)
        for source in ("registered_users", "gym_logins"):
            for rate, groups in CSV_GROUPS.items():
                if getattr(config, rate) <= 0:
                    continue
                for group in groups:
                    if (source, group) not in self.groups_written:
                        values, at = self.last_csv.get(source) or (self._fallback_row(source), batch)
                        self._bad_csv(source, values, group, at)
        for rate, groups in KAFKA_GROUPS.items():
            if getattr(config, rate) <= 0:
                continue
            for group in groups:
                if ("kafka_multiplex", group) not in self.groups_written:
                    topic = "user_info" if group == "payload_invalid_value" else "workout"
                    if topic not in self.last_payload:
                        topic = "user_info"
                    key, payload, partition, sec = self.last_payload[topic]
                    self._bad_kafka(group, topic, key, payload, partition, sec, batch)
        if config.duplicate_rate > 0:
            for source in SOURCES:
                if not self._duplicates_so_far(source) and source in self.last_line:
                    line, topic, at = self.last_line[source]
                    self._write_duplicate(source, (0, 0, self.batcher.not_before(at), line, topic))

    def _duplicates_so_far(self, source: str) -> int:
        """Duplicates of ``source`` written or still pending so far."""
        written = sum(c.duplicates.get(source, 0) for c in self.counts)
        return written + len(self.pending[source])

    def _fallback_row(self, source: str) -> list[str]:
        member = self.members[0]
        if source == "registered_users":
            return [str(member.user_id), str(member.device_id), member.mac_address, str(member.registration_sec)]
        login = self.config.end_epoch - 2000
        return [member.mac_address, str(member.home_gym), str(login), str(login + 600)]

    def check_publishable(self) -> None:
        """``LandedFileDiffers`` when a file of any batch would replace a landed file with other
        bytes; then every temporary file is removed and nothing is published."""
        try:
            check_publishable(pair for writers in self.writers.values() for w in writers for pair in w.targets())
        except LandedFileDiffers:
            for writers in self.writers.values():
                for writer in writers:
                    writer.discard()
            raise

    def publish(self, batch: int) -> BatchTruth:
        """Make the files of ``batch`` visible, in name order; return what they contain."""
        sources = {source: SourceTruth(files=self.writers[source][batch].publish()) for source in SOURCES}
        return BatchTruth(batch=batch, sources=sources, counts=self.counts[batch])


class Simulator:
    """Writes the landing files of a simulated fitness-centre chain.

    ``write_batch(root, b)`` and ``write_all(root)`` produce byte-identical files for batch
    ``b``; each call replays the seeded stream from the start.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config

    def write_batch(self, landing_root: str | Path, batch: int) -> BatchTruth:
        """Write the files of one batch (0-based) and return what they contain."""
        if not 0 <= batch < self.config.batches:
            raise ValueError(f"batch must be in 0..{self.config.batches - 1}")
        run = _Run(self.config, Path(landing_root), {batch})
        run.generate()
        return run.publish(batch)

    def write_all(self, landing_root: str | Path) -> Truth:
        """Write every batch, publishing them in order, and ``<landing_root>/_truth.json``."""
        root = Path(landing_root)
        run = _Run(self.config, root, set(range(self.config.batches)))
        run.generate()
        run.check_publishable()
        truth = Truth.from_batches(self.config.to_dict(), [run.publish(b) for b in range(self.config.batches)])
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / "_truth.json.tmp"
        tmp.write_text(json.dumps(truth.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, root / "_truth.json")
        return truth


def simulate(config: SimulatorConfig, landing_root: str | Path) -> Truth:
    """Write a whole simulation into ``landing_root``; see :meth:`Simulator.write_all`."""
    return Simulator(config).write_all(landing_root)
