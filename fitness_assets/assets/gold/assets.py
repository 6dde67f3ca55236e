"""Gold summary assets: one thin asset per refresh declared in pipelines.gold."""

from fitness_assets.assets.common import refresh_asset
from fitness_assets.pipelines.gold import REFRESHES

gold_assets = [refresh_asset(r) for r in REFRESHES]
