"""Refresh procedures of the silver and gold tables: plan the increment, read what changed
upstream, call the pure transforms, write through the table store. No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass

from fitness_assets.lakehouse.incremental import Increment
from fitness_assets.lakehouse.store import CommitResult


@dataclass
class Refresh:
    """What one refresh of a table did."""

    increment: Increment
    commit: CommitResult | None = None

    @property
    def skipped(self) -> bool:
        return self.commit is None or self.commit.skipped
