"""The `date_lookup` asset."""


from dagster import AssetExecutionContext, DataVersion, MaterializeResult, asset
from pyspark.sql import functions as F

from fitness_assets.assets.common import asset_kwargs, materialization_metadata
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import DATE_LOOKUP
from fitness_assets.transforms import reference


@asset(**asset_kwargs(DATE_LOOKUP))
def date_lookup(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource) -> MaterializeResult:
    """Calendar of the configured range; rewritten only when the range changes."""
    store = lakehouse.store()
    start, end = lakehouse.date_range()
    results = []
    with store.step():
        current = store.read(DATE_LOOKUP).agg(F.min("date"), F.max("date"), F.count(F.lit(1))).first()
        expected_days = (end - start).days + 1
        if tuple(current) != (start, end, expected_days):
            results.append(store.overwrite(DATE_LOOKUP, reference.date_lookup(spark.session(), start, end)))
        else:
            context.log.info("date_lookup already covers %s..%s; nothing to write", start, end)
    return MaterializeResult(data_version=DataVersion(str(store.version(DATE_LOOKUP))),
                             metadata=materialization_metadata(store, DATE_LOOKUP, *results, range=f"{start}..{end}"))
