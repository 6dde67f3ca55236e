"""The embedded lakehouse engine: Spark sessions, the Delta table store, file ingestion and
incremental processing. Nothing here imports Dagster; resources and assets wrap it."""
