"""Bronze layer: landing files as received, rejected lines in quarantine."""

from fitness_assets.assets.bronze.assets import bronze_assets
from fitness_assets.assets.bronze.checks import bronze_checks

__all__ = ["bronze_assets", "bronze_checks"]
