"""Silver assets: one thin asset per refresh declared in pipelines.silver."""

from fitness_assets.assets.common import refresh_asset
from fitness_assets.pipelines.silver import REFRESHES

silver_assets = [refresh_asset(r) for r in REFRESHES]
