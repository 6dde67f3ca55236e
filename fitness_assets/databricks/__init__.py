"""Databricks deployment pieces that are code: the full rebuild of a layer (``rebuild``), run
on a Databricks job cluster and orchestrated from Dagster through Pipes (``pipes``)."""
