"""Seeded simulator of the fitness-centre chain's landing zone (data-contract.md §1).

``simulate(SimulatorConfig.tiny(), root)`` writes ``registered_users/``, ``gym_logins/`` and
``kafka_multiplex/`` files under ``root`` plus ``_truth.json``, which says what every file
contains (valid records, quarantine reasons) and what the silver tables should count.
"""

from fitness_assets.simulator.generator import (
    BatchTruth,
    Simulator,
    SimulatorConfig,
    Truth,
    simulate,
)
from fitness_assets.simulator.truth import Counts, FileTruth, SourceTruth

__all__ = [
    "BatchTruth",
    "Counts",
    "FileTruth",
    "Simulator",
    "SimulatorConfig",
    "SourceTruth",
    "Truth",
    "simulate",
]
