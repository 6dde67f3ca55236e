"""Play a simulated fitness-centre chain in accelerated real time: landing files and Kafka.

The simulator writes the whole chain once, split by time into batches, into a private staging
folder; every ``interval`` seconds the next batch is delivered the way the real sources would
deliver it: its ``registered_users/`` and ``gym_logins/`` CSV files appear in the landing zone
(copied under a name starting with ``_``, which ingestion ignores, then renamed, so no reader
sees half a file), and its Kafka multiplex records are produced to the broker (never written
as landing files). File names carry the run's start time, so a second run adds new files
instead of overwriting ones already ingested.

A demo must be able to show a profile change reaching gold: an ``update`` of ``user_info``
that changes a member's bins (city, state, gender, birth date) delivered after one of that
member's workouts was completed. The staged stream is checked for one; a short or unlucky
simulation without any gets one extra, clearly reported, update (a move to another city) at
the end of the last batch played.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fitness_assets.simulator import Simulator, SimulatorConfig
from fitness_assets.streaming.producer import MultiplexProducer, ProduceStats

FILE_SOURCES = ("registered_users", "gym_logins")
DEFAULT_INTERVAL = 5.0
DEFAULT_BATCHES = 48
_BIN_FIELDS = ("dob", "gender")
_FALLBACK_CITY = ("Springfield", "IL", 62701)


def live_config(batches: int = DEFAULT_BATCHES, members: int = 50, days: int = 2, seed: int = 42) -> SimulatorConfig:
    """A chain split by time into ``batches`` deliveries (late records included)."""
    return SimulatorConfig(seed=seed, members=members, days=days, batches=batches, split="time")


@dataclass
class BatchDelivery:
    """One delivered batch: the landing files it published and the records it produced."""

    batch: int
    files: list[str]
    csv_rows: int
    kafka: ProduceStats
    seconds: float
    #: ``time.monotonic()`` when the delivery began (batches begin ``interval`` apart).
    began: float = 0.0

    def line(self, total: int) -> str:
        return (f"batch {self.batch + 1}/{total}: {len(self.files)} files ({self.csv_rows:,} CSV rows), "
                f"{self.kafka.summary()} in {self.seconds:.2f} s")


@dataclass
class LiveReport:
    """What a live run delivered."""

    batches: list[BatchDelivery] = field(default_factory=list)
    kafka: ProduceStats = field(default_factory=ProduceStats)
    #: Profile updates that change a member's bins after a completed workout of theirs was
    #: delivered (each one changes a row of gold/workout_bpm_summary).
    visible_profile_changes: int = 0
    #: Of those, added to the simulation because it had none.
    synthesized_profile_changes: int = 0
    stopped: bool = False

    @property
    def files(self) -> list[str]:
        return [name for delivery in self.batches for name in delivery.files]


def _bins(payload: Mapping[str, Any]) -> tuple[Any, ...]:
    address = payload.get("address") if isinstance(payload.get("address"), dict) else {}
    return (*(payload.get(f) for f in _BIN_FIELDS), address.get("city"), address.get("state"))


def _records(path: Path) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    """Each line of a multiplex file with its record and payload when both parse."""
    out: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = payload = None
            try:
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    record = parsed
                    value = json.loads(parsed["value"]) if isinstance(parsed.get("value"), str) else None
                    payload = value if isinstance(value, dict) else None
            except ValueError:
                pass
            out.append((line, record, payload))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _ProfileChanges:
    """Finds (or makes) bin-changing profile updates that follow a completed workout."""

    def __init__(self, batches: list[list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]]) -> None:
        self.batches = batches
        starts: dict[tuple[Any, ...], tuple[float, int]] = {}
        stops: dict[tuple[Any, ...], tuple[float, int]] = {}
        for batch, lines in enumerate(batches):
            for _, record, payload in lines:
                if record is None or payload is None or record.get("topic") != "workout":
                    continue
                ts = _number(payload.get("timestamp"))
                key = (payload.get("user_id"), payload.get("workout_id"), payload.get("session_id"))
                events = {"start": starts, "stop": stops}.get(payload.get("action"))
                if ts is not None and events is not None and key not in events:
                    events[key] = (ts, batch)
        #: Batch after which each member has a completed workout (start < stop <= start + 3 h).
        self.completed_in: dict[Any, int] = {}
        for key, (start, start_batch) in starts.items():
            stop = stops.get(key)
            if stop is not None and start < stop[0] <= start + 3 * 3600:
                batch = max(start_batch, stop[1])
                user = key[0]
                self.completed_in[user] = min(batch, self.completed_in.get(user, batch))

    def count(self, played: int) -> int:
        current: dict[Any, dict[str, Any]] = {}
        visible = 0
        for batch, lines in enumerate(self.batches[:played]):
            for _, record, payload in lines:
                if record is None or payload is None or record.get("topic") != "user_info":
                    continue
                user, kind, ts = payload.get("user_id"), payload.get("update_type"), _number(payload.get("timestamp"))
                if ts is None or kind not in ("new", "update", "delete"):
                    continue
                before = current.get(user)
                if before is not None and ts <= before["timestamp"]:
                    continue
                if kind == "delete":
                    current.pop(user, None)
                    continue
                if (kind == "update" and before is not None and self.completed_in.get(user, batch) < batch
                        and _bins(payload) != _bins(before)):
                    visible += 1
                current[user] = payload
        return visible

    def synthesize(self, target: int) -> str | None:
        """A multiplex line moving one member with a completed workout to another city, timed
        after every change of theirs, to be delivered at the end of batch ``target``: the member
        whose workout completed earliest (in the same batch when no earlier one did, which a
        short run of a one-day chain may force); None when no member qualifies."""
        candidates = sorted((b, u) for u, b in self.completed_in.items() if b <= target and isinstance(u, int))
        for _, user in candidates:
            changes = [(r, p) for lines in self.batches for _, r, p in lines
                       if r is not None and p is not None and r.get("topic") == "user_info"
                       and p.get("user_id") == user and _number(p.get("timestamp")) is not None]
            latest = max(changes, key=lambda rp: rp[1]["timestamp"], default=None)
            if latest is None or latest[1].get("update_type") == "delete" or not isinstance(
                    latest[1].get("address"), dict):
                continue
            record, payload = latest
            cities = sorted({(p["address"].get("city"), p["address"].get("state"), p["address"].get("zip"))
                             for lines in self.batches for _, r, p in lines
                             if p is not None and isinstance(p.get("address"), dict)
                             and p["address"].get("city") and p["address"].get("state")})
            here = (payload["address"].get("city"), payload["address"].get("state"))
            city = next((c for c in cities if (c[0], c[1]) != here), _FALLBACK_CITY)
            new = {**payload, "update_type": "update", "timestamp": int(payload["timestamp"]) + 60,
                   "address": {**payload["address"], "city": city[0], "state": city[1], "zip": city[2]}}
            line = {"key": str(user), "value": json.dumps(new, separators=(",", ":")), "topic": "user_info",
                    "partition": record.get("partition"), "offset": -1, "timestamp": new["timestamp"] * 1000}
            return json.dumps(line, separators=(",", ":")) + "\n"
        return None


def _deliver_file(source: Path, folder: Path, name: str) -> None:
    """Copy under an ignored name, then rename: a reader sees the whole file or nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f"_{name}.tmp"
    shutil.copyfile(source, temporary)
    temporary.replace(folder / name)


def _csv_rows(path: Path) -> int:
    with open(path, "rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def play(
    bootstrap_servers: str,
    landing_root: str | Path,
    config: SimulatorConfig | None = None,
    *,
    interval: float = DEFAULT_INTERVAL,
    max_batches: int | None = None,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] = print,
    producer_config: Mapping[str, Any] | None = None,
) -> LiveReport:
    """Deliver the batches of ``config`` (default :func:`live_config`), one every ``interval``
    seconds, the first at once; stop after ``max_batches`` or when ``stop`` is set."""
    config = config or live_config()
    stop = stop or threading.Event()
    total = config.batches if max_batches is None else min(max_batches, config.batches)
    landing = Path(landing_root)
    prefix = time.strftime("live-%Y%m%dT%H%M%SZ-", time.gmtime())
    report = LiveReport()
    with tempfile.TemporaryDirectory(prefix="fitness-live-") as staging_dir:
        stage = Path(staging_dir)
        Simulator(config).write_all(stage)
        by_batch: list[list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]] = [
            [] for _ in range(config.batches)]
        for path in sorted((stage / "kafka_multiplex").glob("batch-*")):
            by_batch[int(path.name.split("-")[1])].extend(_records(path))
        changes = _ProfileChanges(by_batch)
        report.visible_profile_changes = changes.count(total)
        if report.visible_profile_changes == 0 and total >= 2:
            extra = changes.synthesize(total - 1)
            if extra is not None:
                by_batch[total - 1].append((extra, None, None))
                report.visible_profile_changes = report.synthesized_profile_changes = 1
        echo(f"Playing {total} batches of {config.members} members over {config.days} simulated day(s), one every "
             f"{interval:g} s: CSV files into {landing}, Kafka records to {bootstrap_servers}; "
             f"{report.visible_profile_changes} profile changes after completed workouts"
             + (" (1 added)" if report.synthesized_profile_changes else ""))
        producer = MultiplexProducer(bootstrap_servers, config=producer_config)
        next_at = time.monotonic()
        for batch in range(total):
            if batch and stop.wait(max(0.0, next_at - time.monotonic())):
                report.stopped = True
                break
            began = time.monotonic()
            next_at = began + interval
            started = time.perf_counter()
            # The records first: a broker that fails them stops the play before the batch's
            # files land, so no batch is delivered by halves.
            kafka = producer.produce_lines(line for line, _, _ in by_batch[batch])
            producer.flush()
            delivered, rows = [], 0
            for source in FILE_SOURCES:
                for path in sorted((stage / source).glob(f"batch-{batch:05d}-*")):
                    _deliver_file(path, landing / source, prefix + path.name)
                    delivered.append(f"{source}/{prefix}{path.name}")
                    rows += _csv_rows(path)
            delivery = BatchDelivery(batch, delivered, rows, kafka, time.perf_counter() - started, began)
            report.batches.append(delivery)
            report.kafka.add(kafka)
            echo(delivery.line(total))
        else:
            report.stopped = stop.is_set()
    return report


def run_live(
    bootstrap_servers: str,
    landing_root: str | Path,
    config: SimulatorConfig | None = None,
    interval: float = DEFAULT_INTERVAL,
    max_batches: int | None = None,
) -> LiveReport:
    """:func:`play` until done or until SIGINT/SIGTERM (the batch under way is finished)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = play(bootstrap_servers, landing_root, config, interval=interval, max_batches=max_batches, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{'Stopped' if report.stopped else 'Done'}: {len(report.batches)} batches, {len(report.files)} files, "
          f"{report.kafka.summary()}")
    return report
