"""Reference layer: the calendar."""

from fitness_assets.assets.reference.assets import date_lookup
from fitness_assets.assets.reference.checks import reference_checks

__all__ = ["date_lookup", "reference_checks"]
