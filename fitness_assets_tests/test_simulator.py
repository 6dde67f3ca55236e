"""Tests of the landing-zone simulator.

The checks do not trust the simulator: every landed line is classified by an independent
parser of data-contract.md §1 (with the consumer's quarantine vocabulary), and the silver
row counts the truth predicts are recomputed by a small reference consumer from the valid
records alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fitness_assets.simulator import BatchTruth, Simulator, SimulatorConfig, Truth, simulate

SOURCES = ("registered_users", "gym_logins", "kafka_multiplex")
TOPICS = ("user_info", "workout", "bpm")
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
CSV_INT = re.compile(r"-?\d+")
CSV_NUMBER = re.compile(r"-?\d+(\.\d+)?")
DOB = re.compile(r"(\d{2})/(\d{2})/(\d{4})")
NAME = re.compile(r"batch-(\d{5})-part-(\d{4})\.(csv|json)")
HEADERS = {
    "registered_users": "user_id,device_id,mac_address,registration_timestamp",
    "gym_logins": "mac_address,gym,login,logout",
}
CSV_COLUMNS = {name: header.split(",") for name, header in HEADERS.items()}
CSV_REQUIRED = {"registered_users": CSV_COLUMNS["registered_users"], "gym_logins": ["mac_address", "gym", "login"]}
CSV_INT_COLUMNS = {"user_id", "device_id", "gym"}
PAYLOAD_REQUIRED = {
    "user_info": ("user_id", "update_type", "timestamp"),
    "workout": ("user_id", "workout_id", "timestamp", "action", "session_id"),
    "bpm": ("device_id", "time"),
}
PAYLOAD_INTS = {"user_id", "workout_id", "session_id", "device_id"}


# ------------------------------------------------------------------ independent checker


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_time(value: Any) -> float | None:
    """Epoch seconds of a bpm ``time``: a number or an ISO-8601 string; None if neither."""
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    return None


def valid_dob(value: str) -> bool:
    match = DOB.fullmatch(value)
    if not match:
        return False
    month, day, year = (int(g) for g in match.groups())
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def classify_csv(source: str, line: str) -> str | None:
    """The quarantine reason of a CSV data line, or None for a valid record."""
    values = line.split(",")
    columns = CSV_COLUMNS[source]
    if len(values) != len(columns):
        return "malformed_csv"
    row = dict(zip(columns, values, strict=True))
    for column in CSV_REQUIRED[source]:
        if row[column] == "":
            return f"missing_field:{column}"
    for column, text in row.items():
        if column == "mac_address" or text == "":
            continue
        pattern = CSV_INT if column in CSV_INT_COLUMNS else CSV_NUMBER
        if not pattern.fullmatch(text):
            return f"wrong_type:{column}"
    if not MAC.fullmatch(row["mac_address"]):
        return "invalid_value:mac_address"
    return None


def classify_kafka(line: str) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The quarantine reason of a Kafka multiplex line (None if valid), its record and payload."""
    try:
        record = json.loads(line)
    except ValueError:
        return "malformed_json", None, None
    if not isinstance(record, dict):
        return "malformed_json", None, None
    for name in ("topic", "value", "partition", "offset", "timestamp"):
        if record.get(name) is None:
            return f"missing_field:{name}", record, None
    if not isinstance(record["topic"], str):
        return "wrong_type:topic", record, None
    if not isinstance(record["value"], str):
        return "wrong_type:value", record, None
    for name in ("partition", "offset", "timestamp"):
        if not is_int(record[name]):
            return f"wrong_type:{name}", record, None
    if record.get("key") is not None and not isinstance(record["key"], str):
        return "wrong_type:key", record, None
    topic = record["topic"]
    if topic not in TOPICS:
        return "invalid_value:topic", record, None
    try:
        payload = json.loads(record["value"])
    except ValueError:
        return "malformed_payload", record, None
    if not isinstance(payload, dict):
        return "malformed_payload", record, None
    for name in PAYLOAD_REQUIRED[topic]:
        if payload.get(name) is None:
            return f"missing_field:{name}", record, payload
    for name in PAYLOAD_INTS:
        if name in payload and payload[name] is not None and not is_int(payload[name]):
            return f"wrong_type:{name}", record, payload
    if "timestamp" in payload and not is_number(payload["timestamp"]):
        return "wrong_type:timestamp", record, payload
    if topic == "bpm":
        if parse_time(payload["time"]) is None:
            return "wrong_type:time", record, payload
        if payload.get("heartrate") is not None and not is_number(payload["heartrate"]):
            return "wrong_type:heartrate", record, payload
    if topic == "user_info":
        if payload["update_type"] not in ("new", "update", "delete"):
            return "invalid_value:update_type", record, payload
        if payload.get("dob") is not None and not valid_dob(payload["dob"]):
            return "invalid_value:dob", record, payload
    if topic == "workout" and payload["action"] not in ("start", "stop"):
        return "invalid_value:action", record, payload
    return None, record, payload


def landed_files(root: Path) -> list[str]:
    """Visible landed files (relative names) in delivery order."""
    names = []
    for source in SOURCES:
        folder = root / source
        if folder.exists():
            names += [f"{source}/{p.name}" for p in folder.iterdir() if not p.name.startswith(("_", "."))]
    return sorted(names, key=lambda n: (n.split("/")[1], SOURCES.index(n.split("/")[0])))


def data_lines(root: Path, name: str) -> list[str]:
    text = (root / name).read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    source = name.split("/")[0]
    if source in HEADERS:
        assert lines[0] == HEADERS[source]
        lines = lines[1:]
    return lines


@dataclass
class Parsed:
    """Valid records by batch, as a reference consumer would land them in bronze."""

    registrations: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    gym_rows: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    kafka: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_landing(root: Path) -> Parsed:
    """Classify every line and keep the valid records with their batch and file."""
    parsed = Parsed()
    for name in landed_files(root):
        source, file_name = name.split("/")
        batch = int(NAME.fullmatch(file_name).group(1))  # type: ignore[union-attr]
        stats: dict[str, Any] = {"lines": 0, "valid": 0, "quarantined": Counter(), "valid_per_topic": Counter()}
        for line in data_lines(root, name):
            stats["lines"] += 1
            if source == "kafka_multiplex":
                reason, record, payload = classify_kafka(line)
                if reason is None:
                    assert record is not None and payload is not None
                    stats["valid_per_topic"][record["topic"]] += 1
                    parsed.kafka.append((batch, name, record, payload))
            else:
                reason = classify_csv(source, line)
                if reason is None:
                    row = dict(zip(CSV_COLUMNS[source], line.split(","), strict=True))
                    if source == "registered_users":
                        parsed.registrations.append((batch, row))
                    else:
                        parsed.gym_rows.append((batch, name, row))
            if reason is None:
                stats["valid"] += 1
            else:
                stats["quarantined"][reason] += 1
        parsed.files[name] = stats
    return parsed


def time_key(value: Any) -> int:
    """Quarter seconds: every simulated time is a whole number of them."""
    seconds = parse_time(value)
    assert seconds is not None
    quarters = seconds * 4
    assert quarters == int(quarters)
    return int(quarters)


def reference_silver(parsed: Parsed, upto: int) -> dict[str, int]:
    """Row counts of the silver tables after batches ``0..upto``, per data-contract.md §2."""
    users: dict[int, int] = {}
    for batch, row in parsed.registrations:
        if batch <= upto:
            users.setdefault(int(row["user_id"]), int(row["device_id"]))
    device_user = {device: user for user, device in users.items()}
    gym_logs = {(r["mac_address"], r["gym"], r["login"]) for b, _, r in parsed.gym_rows if b <= upto}
    events: dict[tuple[int, int, int, str], int] = {}
    readings: dict[tuple[int, int], Any] = {}
    profiles: dict[int, tuple[int, int, int, str]] = {}
    for batch, _, record, payload in parsed.kafka:
        if batch > upto:
            continue
        if record["topic"] == "workout":
            key = (payload["user_id"], payload["workout_id"], payload["session_id"], payload["action"])
            events.setdefault(key, time_key(payload["timestamp"]))
        elif record["topic"] == "bpm":
            readings.setdefault((payload["device_id"], time_key(payload["time"])), payload.get("heartrate"))
        else:
            order = (time_key(payload["timestamp"]), record["partition"], record["offset"], payload["update_type"])
            user = payload["user_id"]
            if user not in profiles or order > profiles[user]:
                profiles[user] = order
    completed = {}
    for (user, workout, session, action), start in events.items():
        stop = events.get((user, workout, session, "stop"))
        if action == "start" and stop is not None and start < stop <= start + 3 * 3600 * 4:  # quarters
            completed[(user, workout, session)] = (start, stop)
    by_user: dict[int, list[tuple[int, int, tuple[int, int, int]]]] = {}
    for key, (start, stop) in completed.items():
        by_user.setdefault(key[0], []).append((start, stop, key))
    workout_bpm = 0
    with_readings = set()
    for (device, when), heartrate in readings.items():
        if heartrate is None or heartrate <= 0 or device not in device_user:
            continue
        for start, stop, key in by_user.get(device_user[device], []):
            if start < when <= stop:
                workout_bpm += 1
                with_readings.add(key)
    return {
        "users": len(users),
        "gym_logs": len(gym_logs),
        "workouts": len(events),
        "heart_rate": len(readings),
        "completed_workouts": len(completed),
        "workout_bpm": workout_bpm,
        "workouts_with_readings": len(with_readings),
        "user_profile": sum(1 for order in profiles.values() if order[3] != "delete"),
    }


def predicted_silver(batches: list[BatchTruth], upto: int) -> dict[str, int]:
    total = Truth.from_batches({}, batches[: upto + 1]).counts
    return {
        "users": total.members,
        "gym_logs": total.gym_visits,
        "workouts": total.workout_events,
        "heart_rate": total.bpm_readings,
        "completed_workouts": total.workouts_completed,
        "workout_bpm": total.workout_bpm_readings,
        "workouts_with_readings": total.workouts_with_readings,
    }


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def time_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Truth, Path, Parsed]:
    """Default size, three chronological batches, small files so parts roll."""
    root = tmp_path_factory.mktemp("time")
    truth = simulate(SimulatorConfig(batches=3, max_lines_per_file=4000), root)
    return truth, root, parse_landing(root)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Truth, Path, Parsed]:
    root = tmp_path_factory.mktemp("random")
    config = SimulatorConfig(seed=7, members=12, days=2, batches=4, split="random", workout_minutes=(3, 8))
    truth = simulate(config, root)
    return truth, root, parse_landing(root)


# ------------------------------------------------------------------ tests


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    config = SimulatorConfig.tiny(batches=2)
    simulate(config, tmp_path / "a")
    simulate(config, tmp_path / "b")
    simulate(config.replace(seed=43), tmp_path / "c")
    first, second, other = (tree_digest(tmp_path / n) for n in "abc")
    assert first == second
    assert first != other


@pytest.mark.parametrize("split", ["time", "random"])
def test_write_batch_reproduces_write_all(tmp_path: Path, split: str) -> None:
    config = SimulatorConfig.tiny(members=6, days=2, batches=3, split=split, max_lines_per_file=300)
    truth = simulate(config, tmp_path / "all")
    everything = tree_digest(tmp_path / "all")
    simulator = Simulator(config)
    for batch in range(config.batches):
        alone = tmp_path / f"batch{batch}"
        batch_truth = simulator.write_batch(alone, batch)
        assert batch_truth.to_dict() == truth.batches[batch].to_dict()
        files = tree_digest(alone)
        assert files and all(name.split("/")[1].startswith(f"batch-{batch:05d}-") for name in files)
        assert files == {name: everything[name] for name in files}
    assert sum(len(b.sources[s].files) for b in truth.batches for s in SOURCES) == len(everything) - 1


def test_every_line_is_what_the_truth_says(
    time_run: tuple[Truth, Path, Parsed], random_run: tuple[Truth, Path, Parsed]
) -> None:
    for truth, _, parsed in (time_run, random_run):
        files = {name: f for source in SOURCES for name, f in truth.sources[source].files.items()}
        assert sorted(files) == sorted(parsed.files)
        for name, stats in parsed.files.items():
            expected = files[name]
            assert stats["lines"] == expected.lines, name
            assert stats["valid"] == expected.valid, name
            assert dict(stats["quarantined"]) == expected.quarantined, name
            assert dict(stats["valid_per_topic"]) == expected.valid_per_topic, name


def test_truth_adds_up_and_round_trips(time_run: tuple[Truth, Path, Parsed]) -> None:
    truth, root, _ = time_run
    for batch in truth.batches:
        for source in SOURCES:
            for file in batch.sources[source].files.values():
                assert file.lines == file.valid + sum(file.quarantined.values())
                if source == "kafka_multiplex":
                    assert file.valid == sum(file.valid_per_topic.values())
    assert Truth.from_batches(truth.config, truth.batches).to_dict() == truth.to_dict()
    on_disk = json.loads((root / "_truth.json").read_text())
    assert on_disk == json.loads(json.dumps(truth.to_dict()))
    assert Truth.from_dict(on_disk).to_dict() == on_disk
    assert SimulatorConfig.from_dict(on_disk["config"]) == SimulatorConfig(batches=3, max_lines_per_file=4000)


def test_reference_consumer_agrees_with_truth_after_every_batch(
    time_run: tuple[Truth, Path, Parsed], random_run: tuple[Truth, Path, Parsed]
) -> None:
    for truth, _, parsed in (time_run, random_run):
        for upto in range(len(truth.batches)):
            reference = reference_silver(parsed, upto)
            profiles = reference.pop("user_profile")
            assert reference == predicted_silver(truth.batches, upto), upto
        counts = truth.counts
        assert profiles == counts.members - counts.profile_deletes


def test_duplicates_and_offsets(time_run: tuple[Truth, Path, Parsed], random_run: tuple[Truth, Path, Parsed]) -> None:
    for truth, _, parsed in (time_run, random_run):
        positions = Counter((r["topic"], r["partition"], r["offset"]) for _, _, r, _ in parsed.kafka)
        assert sum(n - 1 for n in positions.values()) == truth.counts.duplicates["kafka_multiplex"]
        lines: Counter[str] = Counter()
        for _, row in parsed.registrations:
            lines[",".join(row.values())] += 1
        assert sum(n - 1 for n in lines.values()) == truth.counts.duplicates["registered_users"]
        gym = Counter(",".join(r.values()) for _, _, r in parsed.gym_rows)
        assert sum(n - 1 for n in gym.values()) == truth.counts.duplicates["gym_logins"]
        partitions: dict[str, set[int]] = {}
        for _, _, record, payload in parsed.kafka:
            assert 0 <= record["partition"] < 4
            owner = str(payload.get("user_id", payload.get("device_id")))
            assert record["key"] in (owner, None)
            partitions.setdefault(record["topic"] + owner, set()).add(record["partition"])
        assert all(len(p) == 1 for p in partitions.values())  # one key, one partition


def test_valid_lines_are_canonical_compact_json(tmp_path: Path) -> None:
    simulate(SimulatorConfig.tiny(iso_time_rate=0.3, out_of_range_rate=0.2), tmp_path)
    for name in landed_files(tmp_path):
        if not name.startswith("kafka_multiplex/"):
            continue
        for line in data_lines(tmp_path, name):
            reason, record, payload = classify_kafka(line)
            if reason is None:
                assert json.dumps(record, separators=(",", ":")) == line
                assert json.dumps(payload, separators=(",", ":")) == record["value"]  # type: ignore[index]


def test_offsets_increase_per_partition_within_a_single_batch(tmp_path: Path) -> None:
    simulate(SimulatorConfig.tiny(), tmp_path)
    parsed = parse_landing(tmp_path)
    seen: dict[tuple[str, int], int] = {}
    repeated = 0
    for _, _, record, _ in parsed.kafka:
        key = (record["topic"], record["partition"])
        if record["offset"] <= seen.get(key, -1):
            repeated += 1  # only a duplicate may go back
            continue
        seen[key] = record["offset"]
    positions = Counter((r["topic"], r["partition"], r["offset"]) for _, _, r, _ in parsed.kafka)
    assert repeated == sum(n - 1 for n in positions.values())


def test_random_split_separates_starts_from_stops(random_run: tuple[Truth, Path, Parsed]) -> None:
    _, _, parsed = random_run
    batches: dict[tuple[int, int, int], dict[str, int]] = {}
    for batch, _, record, payload in parsed.kafka:
        if record["topic"] == "workout":
            key = (payload["user_id"], payload["workout_id"], payload["session_id"])
            batches.setdefault(key, {}).setdefault(payload["action"], batch)
    split = [k for k, b in batches.items() if "stop" in b and b["stop"] != b["start"]]
    assert split
    assert any(b["stop"] < b["start"] for b in batches.values() if "stop" in b)


def test_every_anomaly_family_appears(time_run: tuple[Truth, Path, Parsed], tmp_path: Path) -> None:
    tiny = simulate(SimulatorConfig.tiny(batches=2), tmp_path)
    for truth in (time_run[0], tiny):
        for source in SOURCES:
            reasons = truth.sources[source].quarantined
            families = {reason.split(":")[0] for reason in reasons}
            expected = {"missing_field", "wrong_type", "invalid_value"}
            expected |= {"malformed_json", "malformed_payload"} if source == "kafka_multiplex" else {"malformed_csv"}
            assert families == expected, (source, reasons)
            assert truth.counts.duplicates[source] >= 1
        kafka = truth.sources["kafka_multiplex"].quarantined
        assert "invalid_value:topic" in kafka
        assert any(r in kafka for r in ("invalid_value:update_type", "invalid_value:dob", "invalid_value:action"))
        counts = truth.counts
        for name in (
            "unregistered_device_readings",
            "out_of_range_readings",
            "invalid_heartrate_readings",
            "iso_time_readings",
            "open_logouts",
            "late_registrations",
            "profile_out_of_order",
            "profile_deletes",
            "profile_ties",
            "workouts_long",
        ):
            assert getattr(counts, name) >= 1, name
        assert counts.workouts_completed < counts.workouts_started


def test_no_anomalies_when_rates_are_zero(tmp_path: Path) -> None:
    rates = {name: 0.0 for name in ("duplicate_rate", "malformed_rate", "wrong_type_rate", "missing_field_rate")}
    truth = simulate(SimulatorConfig.tiny(**rates), tmp_path)
    for source in SOURCES:
        assert truth.sources[source].quarantined == {}
        assert truth.counts.duplicates[source] == 0


def test_seconds_timestamps_open_logouts_and_late_data(time_run: tuple[Truth, Path, Parsed]) -> None:
    truth, root, parsed = time_run
    units: dict[str, set[str]] = {}
    for _, name, record, payload in parsed.kafka:
        units.setdefault(name, set()).add("s" if record["timestamp"] < 10**11 else "ms")
        event = payload.get("timestamp", payload.get("time"))
        seconds = parse_time(event)
        assert seconds is not None
        ms = record["timestamp"] * (1000 if record["timestamp"] < 10**11 else 1)
        assert 0 <= ms - seconds * 1000 < 3000 or record["timestamp"] < 10**11
    assert any("s" in u for u in units.values()) and any(u == {"ms"} for u in units.values())
    last = len(truth.batches) - 1
    order = {name: i for i, name in enumerate(landed_files(root))}
    opened: dict[tuple[str, str, str], str] = {}
    for _, name, row in parsed.gym_rows:
        key = (row["mac_address"], row["gym"], row["login"])
        if row["logout"] == "":
            opened.setdefault(key, name)
    closed = {(r["mac_address"], r["gym"], r["login"]): n for _, n, r in reversed(parsed.gym_rows) if r["logout"] != ""}
    assert opened
    for key, name in opened.items():
        assert order[closed[key]] > order[name]
    late_members = [int(r["user_id"]) for b, r in parsed.registrations if b == last]
    assert len(late_members) >= truth.counts.late_registrations >= 1


def test_domain_rules_hold(time_run: tuple[Truth, Path, Parsed]) -> None:
    truth, _, parsed = time_run
    registered = {}
    for _, row in parsed.registrations:
        registered.setdefault(int(row["user_id"]), float(row["registration_timestamp"]))
    first_activity: dict[int, float] = {}
    changes: dict[int, dict[tuple[int, int], float]] = {}
    starts: dict[tuple[int, int, int], float] = {}
    stops: dict[tuple[int, int, int], float] = {}
    for _, _, record, payload in parsed.kafka:
        if record["topic"] == "workout":
            user = payload["user_id"]
            first_activity[user] = min(first_activity.get(user, math.inf), payload["timestamp"])
            key = (user, payload["workout_id"], payload["session_id"])
            (starts if payload["action"] == "start" else stops)[key] = payload["timestamp"]
            assert record["key"] == str(user)
        elif record["topic"] == "user_info":
            position = (record["partition"], record["offset"])
            changes.setdefault(payload["user_id"], {})[position] = payload["timestamp"]
            if payload["update_type"] != "delete":
                assert valid_dob(payload["dob"]) and payload["sex"] in ("M", "F")
                assert is_int(payload["address"]["zip"])
    for user, when in first_activity.items():
        assert registered[user] < when
    for key, stop in stops.items():
        assert stop > starts[key]
    ties = sum(len(times) - len(set(times.values())) for times in changes.values())
    assert ties == truth.counts.profile_ties >= 1
    assert len(registered) == SimulatorConfig().members
    ages = set()
    for _, _, record, payload in parsed.kafka:
        if record["topic"] == "user_info" and payload["update_type"] == "new":
            month, day, year = (int(x) for x in payload["dob"].split("/"))
            ages.add((2023 - year) // 10)
    assert len(ages) >= 4


def test_files_sort_in_delivery_order_and_roll(time_run: tuple[Truth, Path, Parsed]) -> None:
    truth, root, _ = time_run
    for source in SOURCES:
        folder = root / source
        names = sorted(p.name for p in folder.iterdir())
        assert all(NAME.fullmatch(n) for n in names), names  # no temporary files left
        expected = [n.split("/")[1] for b in truth.batches for n in b.sources[source].files]
        assert names == expected
        for name in names:
            assert len(data_lines(root, f"{source}/{name}")) <= 4000
    assert len(truth.sources["kafka_multiplex"].files) > len(truth.batches)
    assert sorted(p.name for p in root.iterdir()) == sorted(["_truth.json", *SOURCES])


def test_no_file_for_a_source_without_records(tmp_path: Path) -> None:
    rates = dict.fromkeys(
        ("duplicate_rate", "late_registration_rate", "malformed_rate", "wrong_type_rate", "missing_field_rate"), 0.0
    )
    config = SimulatorConfig.tiny(batches=2, split="time", **rates)
    truth = simulate(config, tmp_path)
    # everyone registered before the period or during its only day: all in batch 0
    assert truth.batches[1].sources["registered_users"].files == {}
    assert not any(n.startswith("batch-00001") for n in (p.name for p in (tmp_path / "registered_users").iterdir()))


def test_scaled_configs_hit_their_reading_targets() -> None:
    for target in (500_000, 5_000_000, 50_000_000):
        config = SimulatorConfig.scaled(target)
        assert abs(config.expected_readings() - target) / target < 0.02
    fixed = SimulatorConfig.scaled(500_000, members=50)
    assert fixed.members == 50 and abs(fixed.expected_readings() - 500_000) / 500_000 < 0.05
    assert SimulatorConfig.scaled(500_000, batches=5).batches == 5


def test_expected_readings_matches_generation(tmp_path: Path) -> None:
    config = SimulatorConfig(members=40, days=3, workout_minutes=(2, 10), seed=3)
    truth = simulate(config, tmp_path)
    assert abs(truth.counts.bpm_readings - config.expected_readings()) / config.expected_readings() < 0.12


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(split="sideways")
    with pytest.raises(ValueError):
        SimulatorConfig(duplicate_rate=1.5)
    with pytest.raises(ValueError):
        SimulatorConfig(workout_minutes=(10, 5))
    with pytest.raises(ValueError):
        Simulator(SimulatorConfig()).write_batch("/nonexistent", 1)


def test_a_simulation_again_keeps_identical_files_and_never_overwrites_different_ones(tmp_path: Path,
                                                                                      monkeypatch, capsys) -> None:
    """Landed files are immutable: the same simulation again leaves every file as it was (its
    modification time too, so nothing looks changed), and another one stops in one line before
    it replaces a file that may have been ingested already."""
    from fitness_assets.cli import main

    monkeypatch.setenv("FITNESS_LANDING_ROOT", str(tmp_path))
    assert main(["simulate", "--preset", "tiny", "--seed", "3", "--batches", "3"]) == 0
    landed = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(tmp_path.rglob("batch-*"))}
    assert landed
    assert main(["simulate", "--preset", "tiny", "--seed", "3", "--batches", "3"]) == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(tmp_path.rglob("batch-*"))} == landed
    capsys.readouterr()
    assert main(["simulate", "--preset", "tiny", "--seed", "4", "--batches", "4"]) == 2  # batch 3: new names
    assert sorted(tmp_path.rglob("batch-*")) == sorted(landed)  # not one file published
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists with other content, and a landed file is never overwritten" in err
    assert all(p.read_bytes() == data for p, (data, _) in landed.items())
    assert not list(tmp_path.rglob("_tmp-*"))  # nothing half-written left behind


def test_a_refused_simulation_to_kafka_sends_no_record(tmp_path: Path, monkeypatch) -> None:
    """With the multiplex sent to Kafka, the landed CSV files are checked before the first
    record is produced: a chain that would overwrite them sends nothing."""
    from confluent_kafka import Consumer, TopicPartition

    from fitness_assets.cli import main
    from fitness_assets.streaming.broker import MockKafkaBroker

    monkeypatch.setenv("FITNESS_LANDING_ROOT", str(tmp_path))
    with MockKafkaBroker(port=0, partitions=1) as broker:
        def ends() -> list[int]:
            consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "probe"})
            try:
                return [consumer.get_watermark_offsets(TopicPartition(t, 0), timeout=10)[1]
                        for t in ("user_info", "workout", "bpm")]
            finally:
                consumer.close()

        sent = ["simulate", "--preset", "tiny", "--kafka-bootstrap-servers", broker.bootstrap_servers]
        assert main([*sent, "--seed", "3"]) == 0
        before = ends()
        assert sum(before) > 0
        assert main([*sent, "--seed", "4"]) == 2
        assert ends() == before
