"""Reading the Kafka multiplex in bounded batches from positions the caller owns.

Positions (the next offset of every topic-partition) live in the bronze Delta table, not in
Kafka: a reader is told where to start, assigns those partitions explicitly (no group
rebalancing) and reads up to the end offsets it saw when it started, so one batch is bounded
and two readers given the same positions read the same records. Offsets may be committed to
the consumer group afterwards, for lag tools, once the data is safely in Delta.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from fitness_assets.streaming.settings import KafkaSettings

PartitionKey = str  # "<topic>/<partition>"


def partition_key(topic: str, partition: int) -> PartitionKey:
    return f"{topic}/{partition}"


def split_key(key: PartitionKey) -> tuple[str, int]:
    topic, _, partition = key.rpartition("/")
    return topic, int(partition)


@dataclass(frozen=True)
class KafkaRecord:
    """One consumed message, with what identifies it in Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


@dataclass
class Batch:
    """What one bounded read returned."""

    records: list[KafkaRecord] = field(default_factory=list)
    start: dict[PartitionKey, int] = field(default_factory=dict)  # first offset asked for
    next_offsets: dict[PartitionKey, int] = field(default_factory=dict)  # position after the batch
    end_offsets: dict[PartitionKey, int] = field(default_factory=dict)  # high watermarks at start
    lost: dict[PartitionKey, int] = field(default_factory=dict)  # offsets removed by retention before read

    def records_by_partition(self) -> dict[PartitionKey, int]:
        counts: dict[PartitionKey, int] = {}
        for r in self.records:
            key = partition_key(r.topic, r.partition)
            counts[key] = counts.get(key, 0) + 1
        return counts


class KafkaReader:
    """A consumer handle for bounded reads and lag questions; use as a context manager."""

    def __init__(self, settings: KafkaSettings, metadata_timeout: float = 10.0):
        self.settings = settings
        self.metadata_timeout = metadata_timeout
        self._consumer = Consumer(settings.consumer_config())

    def __enter__(self) -> KafkaReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def partitions(self) -> list[tuple[str, int]]:
        """Every partition of the configured topics that exist on the cluster."""
        metadata = self._consumer.list_topics(timeout=self.metadata_timeout)
        found = []
        for topic in self.settings.topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            found.extend((topic, p) for p in sorted(meta.partitions))
        return found

    def watermarks(self) -> dict[PartitionKey, tuple[int, int]]:
        """(low, high) offsets of every partition: what exists now."""
        return {
            partition_key(t, p): self._consumer.get_watermark_offsets(TopicPartition(t, p),
                                                                      timeout=self.metadata_timeout)
            for t, p in self.partitions()
        }

    def read(self, positions: Mapping[PartitionKey, int], max_records: int) -> Batch:
        """Records from ``positions`` (next offset per partition; partitions not listed start
        at their beginning) up to the end offsets seen now, at most ``max_records``."""
        batch = Batch()
        assignment = []
        for key, (low, high) in self.watermarks().items():
            start = positions.get(key, OFFSET_BEGINNING)
            first = low if start == OFFSET_BEGINNING else start
            if first < low:
                batch.lost[key] = low - first  # retention removed them before they were read
                first = low
            batch.end_offsets[key] = high
            if first < high:
                topic, partition = split_key(key)
                batch.start[key] = first
                batch.next_offsets[key] = first
                assignment.append(TopicPartition(topic, partition, first))
        if not assignment:
            return batch
        self._consumer.assign(assignment)
        pending = set(batch.start)
        deadline = time.monotonic() + self.settings.poll_timeout_seconds
        while pending and len(batch.records) < max_records and time.monotonic() < deadline:
            for message in self._consumer.consume(num_messages=min(10_000, max_records - len(batch.records)),
                                                  timeout=0.5):
                key = partition_key(message.topic(), message.partition())
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                        continue
                    raise KafkaException(error)
                if key not in pending:
                    continue
                offset = message.offset()
                if offset >= batch.end_offsets[key]:
                    pending.discard(key)  # arrived after this batch started: the next batch takes it
                    continue
                ts_type, ts = message.timestamp()
                batch.records.append(KafkaRecord(message.topic(), message.partition(), offset,
                                                 None if ts_type == 0 else ts, message.key(), message.value()))
                batch.next_offsets[key] = offset + 1
                if offset + 1 >= batch.end_offsets[key]:
                    pending.discard(key)
                if len(batch.records) >= max_records:
                    break
        self._consumer.unassign()
        return batch

    def commit(self, next_offsets: Mapping[PartitionKey, int]) -> None:
        """Record positions in the consumer group (for lag tools only; Delta is the truth)."""
        offsets = [TopicPartition(*split_key(k), offset) for k, offset in next_offsets.items()]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def lag(self, positions: Mapping[PartitionKey, int]) -> dict[PartitionKey, int]:
        """Records not yet taken in, per partition, given the stored positions."""
        return {key: max(0, high - max(positions.get(key, low), low)) for key, (low, high) in self.watermarks().items()}
