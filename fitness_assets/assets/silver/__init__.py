"""Silver layer: typed, deduplicated, CDC-applied business entities."""

from fitness_assets.assets.silver.assets import silver_assets
from fitness_assets.assets.silver.checks import silver_checks

__all__ = ["silver_assets", "silver_checks"]
