"""Rolled, atomically published landing files of one source for one batch.

Lines go to hidden temporary files (names starting with ``_``, which readers ignore) and
become visible only when the batch is published, by ``os.replace`` in name order, so a
reader polling the folder never sees half a file and never sees a file before the ones that
sort before it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from fitness_assets.simulator.truth import FileTruth

#: A later lane's files are numbered after every file of the earlier lanes, whatever the
#: order lines were written in: lane 1 holds rows that must land in a later file of the batch.
LANES = 2


class LandedFileDiffers(RuntimeError):
    """A simulation would overwrite a landed file with other content: landed files are immutable."""


def check_publishable(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Raise ``LandedFileDiffers`` when a written file (first of a pair) would replace a landed
    one (second) that holds other bytes: landing files are immutable, and the platform would
    report the file as changed and never ingest the new content. Checked for all the files of
    a simulation before the first is published, so a refused one publishes nothing."""
    for tmp_path, target in pairs:
        if target.exists() and target.read_bytes() != tmp_path.read_bytes():
            raise LandedFileDiffers(
                f"{target} already exists with other content, and a landed file is never overwritten: run "
                "`fitness-assets reset` (make reset) first, or set FITNESS_LANDING_ROOT to an empty folder")


def publish_file(tmp_path: Path, target: Path) -> None:
    """Move a written file to its landing name; a file already there (with the same bytes,
    ``check_publishable``) is kept as it is, its modification time too (a simulation run
    again)."""
    check_publishable([(tmp_path, target)])
    if target.exists():
        tmp_path.unlink()
        return
    os.replace(tmp_path, target)


def part_name(batch: int, part: int, extension: str) -> str:
    """File name of a part; names sort in delivery order across batches."""
    return f"batch-{batch:05d}-part-{part:04d}{extension}"


class _Part:
    __slots__ = ("tmp_path", "stats")

    def __init__(self, tmp_path: Path | None) -> None:
        self.tmp_path = tmp_path
        self.stats = FileTruth()


class BatchWriter:
    """Writes the lines of one source in one batch, ``max_lines`` data lines per file.

    With ``folder=None`` the writer only counts lines: a run that publishes a single batch
    still needs every batch's part numbers, because a Kafka line's timestamp unit depends on
    the part it falls in and a duplicate copies its original verbatim.
    """

    def __init__(
        self,
        folder: Path | None,
        source: str,
        batch: int,
        extension: str,
        header: str | None,
        max_lines: int,
        seconds_mode: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.folder = folder
        self.source = source
        self.batch = batch
        self.extension = extension
        self.header = header
        self.max_lines = max_lines
        self._seconds_mode = seconds_mode
        self._parts: list[list[_Part]] = [[] for _ in range(LANES)]
        self._counts = [0] * LANES
        self._handles: list[TextIO | None] = [None] * LANES
        #: Whether the next main-lane line falls in a part whose Kafka timestamps are seconds.
        self.seconds = bool(seconds_mode and seconds_mode(batch, 0))

    def write(self, line: str, reason: str | None = None, topic: str | None = None, lane: int = 0) -> None:
        """Append one line (ending in ``\\n``): a valid record (of ``topic`` for Kafka) when
        ``reason`` is None, else a line the consumer must quarantine with that reason."""
        count = self._counts[lane]
        if count % self.max_lines == 0:
            self._roll(lane)
        self._counts[lane] = count + 1
        if self.folder is not None:
            self._handles[lane].write(line)  # type: ignore[union-attr]
            stats = self._parts[lane][-1].stats
            stats.lines += 1
            if reason is None:
                stats.valid += 1
                if topic is not None:
                    stats.valid_per_topic[topic] = stats.valid_per_topic.get(topic, 0) + 1
            else:
                stats.quarantined[reason] = stats.quarantined.get(reason, 0) + 1
        if lane == 0 and self._seconds_mode is not None and (count + 1) % self.max_lines == 0:
            self.seconds = self._seconds_mode(self.batch, (count + 1) // self.max_lines)

    def _roll(self, lane: int) -> None:
        handle = self._handles[lane]
        if handle is not None:
            handle.close()
        if self.folder is None:
            return
        index = len(self._parts[lane])
        tmp = self.folder / f"_tmp-batch-{self.batch:05d}-lane{lane}-{index:04d}{self.extension}"
        self.folder.mkdir(parents=True, exist_ok=True)
        new = open(tmp, "w", encoding="utf-8", newline="\n", buffering=1 << 20)
        if self.header is not None:
            new.write(self.header + "\n")
        self._handles[lane] = new
        self._parts[lane].append(_Part(tmp))

    def close(self) -> None:
        """Close open temporary files (publishing still needs :meth:`publish`)."""
        for lane, handle in enumerate(self._handles):
            if handle is not None:
                handle.close()
                self._handles[lane] = None

    def targets(self) -> list[tuple[Path, Path]]:
        """(temporary file, landing name) of every part, once written."""
        self.close()
        if self.folder is None:
            return []
        parts = [part for lane_parts in self._parts for part in lane_parts]
        return [(part.tmp_path, self.folder / part_name(self.batch, number, self.extension))  # type: ignore[misc]
                for number, part in enumerate(parts)]

    def discard(self) -> None:
        """Remove the temporary files of a batch that is not published."""
        self.close()
        for lane_parts in self._parts:
            for part in lane_parts:
                if part.tmp_path is not None:
                    part.tmp_path.unlink(missing_ok=True)

    def publish(self) -> dict[str, FileTruth]:
        """Rename the temporary files to their final names, in order; return their truth
        keyed by path relative to the landing root."""
        self.close()
        published: dict[str, FileTruth] = {}
        if self.folder is None:
            return published
        number = 0
        for lane_parts in self._parts:
            for part in lane_parts:
                name = part_name(self.batch, number, self.extension)
                publish_file(part.tmp_path, self.folder / name)  # type: ignore[arg-type]
                published[f"{self.source}/{name}"] = part.stats
                number += 1
        return published
