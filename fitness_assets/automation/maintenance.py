"""Storage maintenance: the daily vacuum that makes erasure final.

A member's delete empties their personal data in the current version of the tables (see
``pipelines.silver``), but the files of older versions and the change data still hold it until
they are deleted. The vacuum deletes every file a silver, gold or quarantine table stopped
using more than ``FITNESS_ERASURE_RETENTION_HOURS`` ago (default 168 = 7 days). Keep the
retention longer than any consumer may lag behind: a table's change feed older than the
retention is gone too. Bronze is append-only (it never stops using a file) and is not vacuumed.
"""

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    OpExecutionContext,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)

from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.settings import AutomationSettings
from fitness_assets.tables import ALL_TABLES

VACUUM_JOB = "vacuum_personal_data"
VACUUMED = [t for t in ALL_TABLES if t.layer in ("silver", "gold", "quarantine")]


@op(description="Delete the files silver, gold and quarantine tables stopped using more than "
                "FITNESS_ERASURE_RETENTION_HOURS ago: erased personal data leaves storage for good.")
def vacuum_tables(context: OpExecutionContext, spark: SparkResource, lakehouse: LakehouseResource) -> None:
    store = lakehouse.store()  # delta-rs vacuums without starting Spark
    for spec in VACUUMED:
        removed = store.vacuum(spec, lakehouse.erasure_retention_hours)
        if removed:
            context.log.info("%s: %d unused files deleted", spec.qualified_name, len(removed))


@job(name=VACUUM_JOB, executor_def=in_process_executor,
     description="Vacuum silver, gold and quarantine: makes erasure final after the retention.")
def vacuum_job() -> None:
    vacuum_tables()


def maintenance(settings: AutomationSettings) -> tuple[list[JobDefinition], list[ScheduleDefinition]]:
    """The vacuum job and its daily schedule (03:00 UTC; running unless automation is off)."""
    status = DefaultScheduleStatus.RUNNING if settings.running else DefaultScheduleStatus.STOPPED
    return [vacuum_job], [ScheduleDefinition(name=f"{VACUUM_JOB}_daily", job=vacuum_job, cron_schedule="0 3 * * *",
                                             execution_timezone="UTC", default_status=status)]
