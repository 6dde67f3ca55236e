"""Reading the Kafka multiplex in bounded batches from positions the caller owns.

Positions (the next offset of every topic-partition) live in the bronze Delta table, not in
Kafka: a reader is told where to start, assigns those partitions explicitly (no group
rebalancing) and reads up to the end offsets it saw when it started, so one batch is bounded
and two readers given the same positions read the same records. Offsets may be committed to
the consumer group afterwards, for lag tools, once the data is safely in Delta.

Offsets alone cannot tell a topic made again from the one read before. So the caller also keeps
a fingerprint of the last record read from each partition (``Batch.last_seen``); the next read
starts one record early, and a different record there stops it (``TopicReplaced``) instead of
silently skipping the new topic's first records.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from fitness_assets.streaming.settings import KafkaSettings, kafka_error_text

PartitionKey = str  # "<topic>/<partition>"
LOG = logging.getLogger("fitness_assets.kafka")
T = TypeVar("T")


def partition_key(topic: str, partition: int) -> PartitionKey:
    return f"{topic}/{partition}"


def split_key(key: PartitionKey) -> tuple[str, int]:
    topic, _, partition = key.rpartition("/")
    return topic, int(partition)


@dataclass
class Batch:
    """What one bounded read returned: the records as columns (one entry per record, in the
    order consumed, which is offset order within a partition), and the positions."""

    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int | None] = field(default_factory=list)  # ms; None when Kafka has none
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    start: dict[PartitionKey, int] = field(default_factory=dict)  # first offset asked for
    next_offsets: dict[PartitionKey, int] = field(default_factory=dict)  # position after the batch
    end_offsets: dict[PartitionKey, int] = field(default_factory=dict)  # high watermarks at start
    lost: dict[PartitionKey, tuple[int, int]] = field(default_factory=dict)  # [first, end) deleted unread
    last_seen: dict[PartitionKey, str] = field(default_factory=dict)  # fingerprint of the last record read

    def __len__(self) -> int:
        return len(self.offsets)

    def records_by_partition(self) -> dict[PartitionKey, int]:
        return {partition_key(t, p): n for (t, p), n in Counter(zip(self.topics, self.partitions, strict=True)).items()}


class PositionsAhead(RuntimeError):
    """A partition ends before the offset already read from it: the topic was deleted and made
    again, or a local broker restarted empty. Reading on would silently skip its first records."""

    def __init__(self, ahead: Mapping[PartitionKey, tuple[int, int]]):
        self.ahead = dict(ahead)
        where = ", ".join(f"{key} ends at offset {high}, bronze read up to {position}"
                          for key, (position, high) in sorted(self.ahead.items()))
        super().__init__(
            f"Kafka holds fewer records than bronze already read ({where}): the topic was deleted and "
            "made again, or a local broker restarted empty. Run `fitness-assets rebuild bronze` to read "
            "the topic again from its start, or `make reset` for a local broker")


class TopicReplaced(PositionsAhead):
    """The record just before a stored position is not the one bronze read there: the topic was
    deleted and made again (or a local broker restarted) and already holds at least as many
    records as bronze had read. Reading on would silently skip the new topic's first records."""

    def __init__(self, replaced: Mapping[PartitionKey, int]):
        self.ahead = {}
        self.replaced = dict(replaced)
        where = ", ".join(f"{key} offset {offset}" for key, offset in sorted(self.replaced.items()))
        RuntimeError.__init__(
            self,
            f"Kafka holds other records than bronze read ({where}): the topic was deleted and made again, "
            "or a local broker restarted. Run `fitness-assets rebuild bronze` to read the topic again from "
            "its start, or `make reset` for a local broker")


class KafkaUnavailable(RuntimeError):
    """The Kafka cluster could not be asked what it holds (down, unreachable, refusing the
    client): nothing was read, so nothing is lost; the next run reads from the same positions."""


class ClientLog:
    """librdkafka's log lines for one client. It logs a failed connection every back-off (~20
    lines a second while a broker is down), which went to stderr as is: here the last lines are
    kept for the error that follows, and a line is passed on to the ``fitness_assets.kafka``
    logger only when it differs from the one before."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=4)

    def log(self, level: int, fmt: str, *args) -> None:
        line = fmt % args if args else fmt
        line = line.rpartition("]: ")[2] or line  # without "FAIL [rdkafka#consumer-1] [thrd:...]: "
        if not self.lines or self.lines[-1] != line:
            LOG.log(level, "%s", line)
        self.lines.append(line)


def fingerprint(timestamp: int | None, key: bytes | None, value: bytes | None) -> str:
    """A short digest of one record's timestamp, key and value: what tells the record at an
    offset from another record at the same offset of a topic made again."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (b"" if timestamp is None else str(timestamp).encode(), key, value):
        digest.update(b"\xff" if part is None else len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


# Consumer errors that stop a read: the client may not read (its credentials, its rights).
STOPPING_ERRORS = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
    KafkaError._SSL,
})


def record_timestamp(message) -> int | None:
    """A record's timestamp (epoch milliseconds), None when it has none: no timestamp type, or
    Kafka's -1 for "none" (records of the oldest message format, some clients), or any other
    negative value."""
    kind, value = message.timestamp()
    return None if kind == 0 or value is None or value < 0 else value


def check_positions(positions: Mapping[PartitionKey, int], watermarks: Mapping[PartitionKey, tuple[int, int]]) -> None:
    """Raise ``PositionsAhead`` when a partition (``(low, high)`` watermarks) ends before the
    position read from it."""
    ahead = {key: (positions[key], high) for key, (_, high) in watermarks.items() if positions.get(key, 0) > high}
    if ahead:
        raise PositionsAhead(ahead)


class KafkaReader:
    """A consumer handle for bounded reads and lag questions; use as a context manager."""

    def __init__(self, settings: KafkaSettings, metadata_timeout: float = 10.0):
        self.settings = settings
        self.metadata_timeout = metadata_timeout
        self._log = ClientLog()
        self._consumer = Consumer({**settings.consumer_config(), "logger": self._log})

    def _ask(self, question: Callable[[], T]) -> T:
        """``question()``; a ``KafkaUnavailable`` in one line when the cluster does not answer."""
        try:
            return question()
        except KafkaException as error:
            self._consumer.consume(num_messages=1, timeout=0)  # serves the client's log lines
            reason = kafka_error_text(error)
            last = f"; the client's last words: {self._log.lines[-1]}" if self._log.lines else ""
            raise KafkaUnavailable(
                f"Kafka at {self.settings.bootstrap_servers} did not answer within {self.metadata_timeout:g} s "
                f"({reason}{last}): start the broker or fix FITNESS_KAFKA_BOOTSTRAP_SERVERS (unset, Kafka is "
                "off); nothing was read, the next run starts where bronze stopped") from None

    def __enter__(self) -> KafkaReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def partitions(self) -> list[tuple[str, int]]:
        """Every partition of the configured topics that exist on the cluster."""
        metadata = self._ask(lambda: self._consumer.list_topics(timeout=self.metadata_timeout))
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
            partition_key(t, p): self._ask(lambda t=t, p=p: self._consumer.get_watermark_offsets(
                TopicPartition(t, p), timeout=self.metadata_timeout))
            for t, p in self.partitions()
        }

    def read(self, positions: Mapping[PartitionKey, int], max_records: int,
             last_seen: Mapping[PartitionKey, str] | None = None) -> Batch:
        """Records from ``positions`` (next offset per partition; partitions not listed start
        at offset 0) up to the end offsets seen now, at most ``max_records``. Raises
        ``PositionsAhead`` when a partition ends before its position, and ``TopicReplaced`` when
        the record before a position does not match its fingerprint in ``last_seen`` (a record
        no longer there, deleted by retention or compaction, cannot be compared and is passed)."""
        batch = Batch()
        assignment = []
        verify: dict[tuple[str, int], tuple[int, str]] = {}  # the record before the start, to compare
        last_seen = last_seen or {}
        watermarks = self.watermarks()
        check_positions(positions, watermarks)
        for key, (low, high) in watermarks.items():
            # A partition never read starts at offset 0: offsets below its low watermark
            # were deleted before bronze read them, and count as lost like any other gap.
            first = positions.get(key, 0)
            if first < low:
                # Retention deleted them before they were read: the batch records the gap and
                # moves past it, even when nothing is left to read after it.
                batch.lost[key] = (first, low)
                batch.next_offsets[key] = first = low
            batch.end_offsets[key] = high
            if first < high:
                topic, partition = split_key(key)
                batch.start[key] = first
                batch.next_offsets[key] = first
                if key in last_seen and first > low and first == positions.get(key):
                    verify[(topic, partition)] = (first - 1, last_seen[key])
                    assignment.append(TopicPartition(topic, partition, first - 1))
                else:
                    assignment.append(TopicPartition(topic, partition, first))
        if not assignment:
            return batch
        self._consumer.assign(assignment)
        ends = {split_key(key): batch.end_offsets[key] for key in batch.start}
        starts = {split_key(key): start for key, start in batch.start.items()}
        pending = set(ends)
        after: dict[tuple[str, int], int] = {}
        # The hot loop: a few C calls and list appends per message, nothing else.
        topics, partitions, offsets = batch.topics.append, batch.partitions.append, batch.offsets.append
        timestamps, keys, values = batch.timestamps.append, batch.keys.append, batch.values.append
        count = 0
        replaced: dict[PartitionKey, int] = {}
        deadline = time.monotonic() + self.settings.poll_timeout_seconds
        while pending and count < max_records and time.monotonic() < deadline:
            for message in self._consumer.consume(num_messages=min(10_000, max_records - count), timeout=0.5):
                error = message.error()
                where = (message.topic(), message.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where)
                        continue
                    if error.fatal() or error.code() in STOPPING_ERRORS:
                        raise KafkaException(error)
                    # A fetch that failed for now (a request timed out, a leader moving in a
                    # rolling restart): librdkafka fetches again after a back-off, and this
                    # batch waits for it until its deadline.
                    self._log.log(logging.WARNING, "%s", f"fetch error, retried: {error.str()}")
                    continue
                if where not in pending:
                    continue
                offset = message.offset()
                if where in verify:  # the first record of this partition: the one before the start?
                    before, expected = verify.pop(where)
                    if offset == before:
                        if fingerprint(record_timestamp(message), message.key(), message.value()) != expected:
                            replaced[partition_key(*where)] = offset
                            pending.discard(where)
                        continue
                if offset < starts[where]:
                    # Below the position this batch asked for: the partition's log went back (a
                    # topic made again, an unclean leader election, a broker restarted), and
                    # the consumer restarted from its earliest record. Taking these would
                    # double records bronze holds.
                    replaced[partition_key(*where)] = offset
                    pending.discard(where)
                    continue
                end = ends[where]
                if offset >= end:
                    pending.discard(where)  # arrived after this batch started: the next batch takes it
                    continue
                topics(where[0])
                partitions(where[1])
                offsets(offset)
                timestamps(record_timestamp(message))
                keys(message.key())
                values(message.value())
                after[where] = offset + 1
                if offset + 1 >= end:
                    pending.discard(where)
                count += 1
                if count >= max_records:
                    break
        self._consumer.unassign()
        if replaced:
            raise TopicReplaced(replaced)
        batch.next_offsets.update({partition_key(*where): offset for where, offset in after.items()})
        self._gaps_while_reading(batch, set(after))
        self._fingerprint_last(batch, set(after))
        return batch

    @staticmethod
    def _fingerprint_last(batch: Batch, read: set[tuple[str, int]]) -> None:
        """The fingerprint of the last record read from each partition read."""
        for i in range(len(batch) - 1, -1, -1):
            where = (batch.topics[i], batch.partitions[i])
            if where in read:
                read.discard(where)
                batch.last_seen[partition_key(*where)] = fingerprint(batch.timestamps[i], batch.keys[i],
                                                                     batch.values[i])
                if not read:
                    break

    def _gaps_while_reading(self, batch: Batch, read: set[tuple[str, int]]) -> None:
        """Retention may delete records between the watermark question and the fetch: the
        consumer then starts at the earliest record kept, later than asked, without a word.
        Where a partition's first record read is after its start and the earliest offset kept
        is now after the start too, the offsets up to it are a gap like any other (added to one
        found before the read). A start on a transaction marker, or a compacted hole, is no gap:
        the earliest offset kept is not after it."""
        seen: dict[tuple[str, int], int] = {}  # the first offset read of each partition
        for topic, partition, offset in zip(batch.topics, batch.partitions, batch.offsets, strict=True):
            if (topic, partition) not in seen:
                seen[(topic, partition)] = offset
                if len(seen) == len(read):
                    break
        for (topic, partition), first in seen.items():
            key = partition_key(topic, partition)
            start = batch.start[key]
            if first <= start:
                continue
            low, _ = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.metadata_timeout)
            if low > start:
                batch.lost[key] = (batch.lost.get(key, (start, start))[0], min(first, low))

    def commit(self, next_offsets: Mapping[PartitionKey, int]) -> None:
        """Record positions in the consumer group (for lag tools only; Delta is the truth)."""
        offsets = [TopicPartition(*split_key(k), offset) for k, offset in next_offsets.items()]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def lag(self, positions: Mapping[PartitionKey, int]) -> dict[PartitionKey, int]:
        """Records not yet taken in, per partition, given the stored positions."""
        return {key: max(0, high - max(positions.get(key, low), low)) for key, (low, high) in self.watermarks().items()}
