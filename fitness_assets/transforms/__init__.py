"""Pure PySpark transforms: functions of DataFrames and Columns, no Dagster, no I/O."""
