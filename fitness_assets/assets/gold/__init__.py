"""Gold layer: business summaries."""

from fitness_assets.assets.gold.assets import gold_assets
from fitness_assets.assets.gold.checks import gold_checks

__all__ = ["gold_assets", "gold_checks"]
