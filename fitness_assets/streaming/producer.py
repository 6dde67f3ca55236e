"""Produce the landing contract's Kafka multiplex records to a Kafka broker.

A multiplex line is a Kafka record as a file stores it (``key``, ``value``, ``topic``,
``partition``, ``offset``, ``timestamp`` in ms). Producing it means giving the broker back what
it would have received: ``value`` with ``key`` on ``topic``, in partition ``partition`` modulo
the topic's partition count (so a member's stream keeps its order), with the record's time.
Offsets are the broker's to assign.

Lines that break the contract are still produced whenever they can be a Kafka message, because
deciding what is valid is bronze's job (it quarantines a bad payload with its reason); only a
line without a usable topic is skipped, and counted. Where the record's own partition or
timestamp cannot be used, the producer lets Kafka choose (partition by key, time of production)
and counts that too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from fitness_assets.tables import KAFKA_TOPICS

MULTIPLEX_FOLDER = "kafka_multiplex"
#: Below this a record's timestamp is in seconds (the landing contract's rule).
SECONDS_LIMIT = 10**11
_PARTITION_BY_KEY = -1


def producer_config(bootstrap_servers: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Settings of an idempotent producer: no duplicates or reordering within a partition on
    retries; lz4 batches because the local mock broker keeps a fixed number of bytes per
    partition; delivery reports only for failures, since a callback per message would cost as
    much as producing it."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "queue.buffering.max.messages": 500_000,
        "delivery.report.only.error": True,
        "log.connection.close": False,
        **(overrides or {}),
    }


@dataclass
class ProduceStats:
    """What a producer did with the lines it was given."""

    lines: int = 0
    produced: dict[str, int] = field(default_factory=dict)
    #: Lines that could not be a Kafka message, by reason (``malformed_json``,
    #: ``missing_topic``, ``unknown_topic``).
    skipped: dict[str, int] = field(default_factory=dict)
    #: Messages produced with a Kafka-chosen partition or time, or a time converted from
    #: seconds (``partition_by_key``, ``timestamp_now``, ``timestamp_seconds``).
    adjusted: dict[str, int] = field(default_factory=dict)

    @property
    def produced_total(self) -> int:
        return sum(self.produced.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def add(self, other: ProduceStats) -> None:
        self.lines += other.lines
        for mine, theirs in ((self.produced, other.produced), (self.skipped, other.skipped),
                             (self.adjusted, other.adjusted)):
            for name, count in theirs.items():
                mine[name] = mine.get(name, 0) + count

    def summary(self) -> str:
        topics = ", ".join(f"{t} {n:,}" for t, n in sorted(self.produced.items())) or "none"
        text = f"{self.produced_total:,} Kafka records ({topics})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items()))
        return text


def _count(counter: dict[str, int], name: str) -> None:
    counter[name] = counter.get(name, 0) + 1


def _as_int(value: Any) -> int | None:
    """An integer from a JSON number or numeric string (the contract accepts both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


class MultiplexProducer:
    """Produces multiplex lines to ``topics`` on one broker through one idempotent producer.

    Call :meth:`flush` (or leave the ``with`` block) to wait for every message: it raises
    ``KafkaException`` if any message failed, so nothing is lost silently.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Iterable[str] = KAFKA_TOPICS,
        config: Mapping[str, Any] | None = None,
        metadata_timeout: float = 10.0,
    ) -> None:
        self.topics = frozenset(topics)
        self.errors: list[str] = []
        base = producer_config(bootstrap_servers, config)
        base["error_cb"] = self._on_error
        base["on_delivery"] = self._on_delivery
        self._producer = Producer(base)
        self._metadata_timeout = metadata_timeout
        self._partitions: dict[str, int] = {}
        self._since_poll = 0
        self.stats = ProduceStats()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.errors.append(f"fatal producer error: {error}")

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.errors.append(f"{message.topic()} [{message.partition()}]: {error}")

    def partition_count(self, topic: str) -> int:
        """Partitions of ``topic`` on the broker (asked once per topic)."""
        count = self._partitions.get(topic)
        if count is None:
            metadata = self._producer.list_topics(topic, timeout=self._metadata_timeout)
            info = metadata.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                raise KafkaException(f"topic {topic!r} has no partitions: {info.error if info else 'missing'}")
            count = self._partitions[topic] = len(info.partitions)
        return count

    def produce_line(self, line: str | bytes) -> bool:
        """Produce one multiplex line; False when it cannot be a Kafka message (counted)."""
        stats = self.stats
        stats.lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            _count(stats.skipped, "malformed_json")
            return False
        if not isinstance(record, dict):
            _count(stats.skipped, "malformed_json")
            return False
        topic = record.get("topic")
        if not isinstance(topic, str) or not topic:
            _count(stats.skipped, "missing_topic")
            return False
        if topic not in self.topics:
            _count(stats.skipped, "unknown_topic")
            return False
        partition = _as_int(record.get("partition"))
        if partition is None or partition < 0:
            partition = _PARTITION_BY_KEY
            _count(stats.adjusted, "partition_by_key")
        else:
            partition %= self.partition_count(topic)
        timestamp = _as_int(record.get("timestamp"))
        if timestamp is None or timestamp <= 0:
            timestamp = 0
            _count(stats.adjusted, "timestamp_now")
        elif timestamp < SECONDS_LIMIT:
            timestamp *= 1000
            _count(stats.adjusted, "timestamp_seconds")
        self._produce(topic, _as_bytes(record.get("value")), _as_bytes(record.get("key")), partition, timestamp)
        _count(stats.produced, topic)
        return True

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int, timestamp: int) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, partition=partition, timestamp=timestamp)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._since_poll = 0
            self._producer.poll(0)
            if self.errors:
                self._raise()

    def produce_lines(self, lines: Iterable[str | bytes]) -> ProduceStats:
        """Produce many lines (blank lines are not records and are ignored); return what these
        lines gave, also added to :attr:`stats`."""
        before = ProduceStats()
        before.add(self.stats)
        for line in lines:
            if line.strip():
                self.produce_line(line)
        return _difference(self.stats, before)

    def produce_file(self, path: str | Path) -> ProduceStats:
        with open(path, "rb") as handle:
            return self.produce_lines(handle)

    def flush(self, timeout: float = 120.0) -> None:
        """Wait until every message is acknowledged; raise on any failure or timeout."""
        left = self._producer.flush(timeout)
        if self.errors:
            self._raise()
        if left:
            raise KafkaException(f"{left} messages still undelivered after {timeout} s")

    def _raise(self) -> None:
        errors, self.errors = self.errors, []
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise KafkaException(f"Kafka delivery failed: {errors[0]}{more}")

    def __enter__(self) -> MultiplexProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.flush()


def _difference(after: ProduceStats, before: ProduceStats) -> ProduceStats:
    def minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}

    return ProduceStats(
        lines=after.lines - before.lines,
        produced=minus(after.produced, before.produced),
        skipped=minus(after.skipped, before.skipped),
        adjusted=minus(after.adjusted, before.adjusted),
    )


def multiplex_files(folder: str | Path) -> list[Path]:
    """The multiplex files of a folder in delivery (name) order, without in-flight
    temporaries (names starting with ``_`` or ``.``)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def produce_files(
    bootstrap_servers: str,
    paths: Iterable[str | Path],
    topics: Iterable[str] = KAFKA_TOPICS,
    config: Mapping[str, Any] | None = None,
) -> ProduceStats:
    """Produce every line of ``paths``, in order, and wait for the broker to have them all."""
    with MultiplexProducer(bootstrap_servers, topics, config) as producer:
        for path in paths:
            producer.produce_file(path)
    return producer.stats
