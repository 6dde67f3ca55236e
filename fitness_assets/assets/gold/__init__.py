"""Gold layer: the two summaries of the original and the business tables."""

from fitness_assets.assets.gold.assets import gold_assets as summary_assets
from fitness_assets.assets.gold.business import business_assets, business_checks
from fitness_assets.assets.gold.checks import gold_checks as summary_checks

gold_assets = [*summary_assets, *business_assets]
gold_checks = [*summary_checks, *business_checks]

__all__ = ["gold_assets", "gold_checks"]
