"""What the simulator wrote: per file line counts and quarantine reasons, and domain counts.

A consumer's tests compare their bronze, quarantine and silver tables against these numbers.
Everything here is additive: the :class:`Truth` of a run is the sum of its
:class:`BatchTruth` objects, so the state after any prefix of batches can be predicted too.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("registered_users", "gym_logins", "kafka_multiplex")
TOPICS = ("user_info", "workout", "bpm")


def _add_counters(into: dict[str, int], other: dict[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value


def _sorted(counter: dict[str, int]) -> dict[str, int]:
    return {key: counter[key] for key in sorted(counter) if counter[key]}


@dataclass
class FileTruth:
    """One landed file: data lines (CSV header excluded), how many are valid records, the
    quarantine reasons of the others, and (Kafka multiplex only) valid records per topic.
    ``lines == valid + sum(quarantined.values())`` always holds."""

    lines: int = 0
    valid: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    valid_per_topic: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``valid_per_topic`` only appears for Kafka files."""
        out: dict[str, Any] = {
            "lines": self.lines,
            "valid": self.valid,
            "quarantined": _sorted(self.quarantined),
        }
        if self.valid_per_topic:
            out["valid_per_topic"] = _sorted(self.valid_per_topic)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileTruth:
        """Inverse of :meth:`to_dict`."""
        return cls(
            lines=data["lines"],
            valid=data["valid"],
            quarantined=dict(data.get("quarantined", {})),
            valid_per_topic=dict(data.get("valid_per_topic", {})),
        )


@dataclass
class SourceTruth:
    """The files of one source (folder), keyed by path relative to the landing root, in
    delivery order. Totals are derived from the files."""

    files: dict[str, FileTruth] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        """Data lines over all files."""
        return sum(f.lines for f in self.files.values())

    @property
    def valid(self) -> int:
        """Valid records (bronze rows) over all files."""
        return sum(f.valid for f in self.files.values())

    @property
    def quarantined(self) -> dict[str, int]:
        """Quarantined lines per reason over all files."""
        total: Counter[str] = Counter()
        for f in self.files.values():
            total.update(f.quarantined)
        return _sorted(total)

    @property
    def valid_per_topic(self) -> dict[str, int]:
        """Valid Kafka records per topic over all files (empty for CSV sources)."""
        total: Counter[str] = Counter()
        for f in self.files.values():
            total.update(f.valid_per_topic)
        return _sorted(total)

    def merged(self, other: SourceTruth) -> SourceTruth:
        """Both sets of files, kept in name (= delivery) order."""
        files = {**self.files, **other.files}
        return SourceTruth(files={name: files[name] for name in sorted(files)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the files plus the derived totals."""
        out: dict[str, Any] = {
            "files": {name: f.to_dict() for name, f in self.files.items()},
            "lines": self.lines,
            "valid": self.valid,
            "quarantined": self.quarantined,
        }
        if self.valid_per_topic:
            out["valid_per_topic"] = self.valid_per_topic
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceTruth:
        """Inverse of :meth:`to_dict` (totals are recomputed, not read)."""
        return cls(files={name: FileTruth.from_dict(f) for name, f in data["files"].items()})


@dataclass
class Counts:
    """Domain counts of the records delivered in a batch (or a whole run).

    Each distinct record is counted in the batch of its first delivery; duplicates only in
    ``duplicates``. Counts describing a *join* are counted in the batch in which the last
    record needed for it arrives, so summing the first ``k`` batches predicts the silver
    tables after ``k`` batches:

    - ``members``/``devices``: registrations (``users`` rows); ``late_registrations`` of them
      were delivered in the last batch.
    - ``profile_changes`` (``deletes`` included), ``profile_deletes``: ``user_profile`` ends
      with ``members - profile_deletes`` rows (a delete is always a member's latest change);
      ``profile_ties``: changes sharing their timestamp with an older-offset change of the
      same member (the higher offset wins); ``profile_out_of_order``: updates delivered in a
      batch earlier than an older change of the same member.
    - ``gym_visits``: distinct ``(mac_address, gym, login)`` (``gym_logs`` rows);
      ``open_logouts``: visits first written with an empty logout.
    - ``workout_events`` = ``workouts`` rows (distinct start and stop events);
      ``workouts_started``; ``workouts_completed``: stop at most 3 h after start
      (``completed_workouts`` rows, counted when both events have arrived);
      ``workouts_long``: stop more than 3 h after start; ``workouts_without_stop``.
    - ``bpm_readings``: distinct readings (``heart_rate`` rows), including
      ``unregistered_device_readings`` and ``out_of_range_readings`` (heartrate 0, negative,
      above 220 or null), of which ``invalid_heartrate_readings`` (0, negative or null) get
      ``valid = false``; ``iso_time_readings`` carry an ISO-8601 ``time``.
    - ``workout_bpm_readings``: ``workout_bpm`` rows, counted when the reading, both workout
      events and the registration have all arrived; ``workouts_with_readings``: completed
      workouts with at least one such row (one ``workout_bpm_summary`` row each, before the
      summary's join to member profiles drops deleted members).
    - ``duplicates``: exact duplicate lines written, per source.
    """

    members: int = 0
    devices: int = 0
    late_registrations: int = 0
    profile_changes: int = 0
    profile_deletes: int = 0
    profile_ties: int = 0
    profile_out_of_order: int = 0
    gym_visits: int = 0
    open_logouts: int = 0
    workout_events: int = 0
    workouts_started: int = 0
    workouts_completed: int = 0
    workouts_long: int = 0
    workouts_without_stop: int = 0
    bpm_readings: int = 0
    unregistered_device_readings: int = 0
    out_of_range_readings: int = 0
    invalid_heartrate_readings: int = 0
    iso_time_readings: int = 0
    workout_bpm_readings: int = 0
    workouts_with_readings: int = 0
    duplicates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))

    def add(self, other: Counts) -> None:
        """Add ``other`` into this object."""
        for f in dataclasses.fields(self):
            if f.name == "duplicates":
                _add_counters(self.duplicates, other.duplicates)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``duplicates`` lists every source, zeros included)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["duplicates"] = {source: self.duplicates.get(source, 0) for source in SOURCES}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["duplicates"] = {**dict.fromkeys(SOURCES, 0), **values.get("duplicates", {})}
        return cls(**values)


def _sources_to_dict(sources: dict[str, SourceTruth]) -> dict[str, Any]:
    return {name: sources[name].to_dict() for name in SOURCES}


def _sources_from_dict(data: dict[str, Any]) -> dict[str, SourceTruth]:
    return {name: SourceTruth.from_dict(data[name]) for name in SOURCES}


def _empty_sources() -> dict[str, SourceTruth]:
    return {name: SourceTruth() for name in SOURCES}


@dataclass
class BatchTruth:
    """What one batch delivered: its files per source and the counts of its records."""

    batch: int
    sources: dict[str, SourceTruth] = field(default_factory=_empty_sources)
    counts: Counts = field(default_factory=Counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "batch": self.batch,
            "sources": _sources_to_dict(self.sources),
            "counts": self.counts.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchTruth:
        """Inverse of :meth:`to_dict`."""
        return cls(
            batch=data["batch"],
            sources=_sources_from_dict(data["sources"]),
            counts=Counts.from_dict(data["counts"]),
        )


@dataclass
class Truth:
    """A whole run: the config, every batch, and their sums (files merged, counts added)."""

    config: dict[str, Any]
    batches: list[BatchTruth] = field(default_factory=list)
    sources: dict[str, SourceTruth] = field(default_factory=_empty_sources)
    counts: Counts = field(default_factory=Counts)

    @classmethod
    def from_batches(cls, config: dict[str, Any], batches: list[BatchTruth]) -> Truth:
        """The sum of ``batches``."""
        sources = _empty_sources()
        counts = Counts()
        for batch in batches:
            for name in SOURCES:
                sources[name] = sources[name].merged(batch.sources[name])
            counts.add(batch.counts)
        return cls(config=config, batches=list(batches), sources=sources, counts=counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the content of ``_truth.json``)."""
        return {
            "config": self.config,
            "sources": _sources_to_dict(self.sources),
            "counts": self.counts.to_dict(),
            "batches": [batch.to_dict() for batch in self.batches],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        """Inverse of :meth:`to_dict`."""
        return cls(
            config=dict(data["config"]),
            batches=[BatchTruth.from_dict(b) for b in data["batches"]],
            sources=_sources_from_dict(data["sources"]),
            counts=Counts.from_dict(data["counts"]),
        )
