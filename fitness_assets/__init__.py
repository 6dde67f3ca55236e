"""Fitness Centre Medallion Data Platform: a Dagster code location on PySpark and Delta Lake."""
