"""Storage maintenance: the hourly compaction that keeps micro-batches from piling up small
files, and the daily vacuum that makes erasure final.

Every micro-batch adds a small file to each table it changes (a run every 30 seconds: 120 an
hour), and every read lists and opens them all (measured: a Spark scan of the 0.5M
`heart_rate` after 300 micro-batches, 2.1 s against 0.2 s compacted). The compaction rewrites
them into files of the table's target size (``delta.targetFileSize``: ~8 MiB for the
time-clustered tables, keeping their order; delta-rs's 100 MB default otherwise), as an
OPTIMIZE commit that changes no data. Only tables with a change data feed are compacted: their
consumers read what changed from the feed, which an OPTIMIZE leaves empty. The append-only
tables (bronze, quarantine, the calendar) are read by the files added since a version, which a
compaction would replace.

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
from deltalake.exceptions import CommitFailedError

from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.settings import AutomationSettings
from fitness_assets.tables import ALL_TABLES

COMPACT_JOB = "compact_tables"
COMPACT_SCHEDULE = f"{COMPACT_JOB}_hourly"
COMPACTED = [t for t in ALL_TABLES if t.change_data_feed]
VACUUM_JOB = "vacuum_personal_data"
VACUUM_SCHEDULE = f"{VACUUM_JOB}_daily"
VACUUMED = [t for t in ALL_TABLES if t.layer in ("silver", "gold", "quarantine")]


@op(description="Rewrite the small files of the tables with a change data feed (silver, gold) into "
                "files of their target size, rows unchanged.")
def compact(context: OpExecutionContext, spark: SparkResource, lakehouse: LakehouseResource) -> None:
    store = lakehouse.store()  # delta-rs compacts without starting Spark
    for spec in COMPACTED:
        try:
            done = store.compact(spec)
        except CommitFailedError as error:  # a concurrent write won: the next hour compacts it
            context.log.warning("%s: not compacted, a concurrent write committed first (%s)", spec.qualified_name, error)
            continue
        if done.removed:
            context.log.info("%s: %d files rewritten as %d", spec.qualified_name, done.removed, done.added)


@job(name=COMPACT_JOB, executor_def=in_process_executor,
     description="Compact silver and gold: the small files of an hour of micro-batches into files of their target size.")
def compact_job() -> None:
    compact()


class VacuumFailed(RuntimeError):
    """Some tables could not be vacuumed (the others were)."""


@op(description="Delete the files silver, gold and quarantine tables stopped using more than "
                "FITNESS_ERASURE_RETENTION_HOURS ago: erased personal data leaves storage for good.")
def vacuum_tables(context: OpExecutionContext, spark: SparkResource, lakehouse: LakehouseResource) -> None:
    store = lakehouse.store()  # delta-rs vacuums without starting Spark
    failed = []
    for spec in VACUUMED:
        try:
            removed = store.vacuum(spec, lakehouse.erasure_retention_hours)
        except Exception as error:  # one table's fault does not leave the others' erasures pending
            context.log.error("%s: not vacuumed: %s", spec.qualified_name, error)
            failed.append(spec.qualified_name)
            continue
        if removed:
            context.log.info("%s: %d unused files deleted", spec.qualified_name, len(removed))
    if failed:
        raise VacuumFailed(f"not vacuumed (erased data may still be in their old files): {', '.join(failed)}; "
                           "the other tables were; see this run's errors for why")


@job(name=VACUUM_JOB, executor_def=in_process_executor,
     description="Vacuum silver, gold and quarantine: makes erasure final after the retention.")
def vacuum_job() -> None:
    vacuum_tables()


def maintenance(settings: AutomationSettings) -> tuple[list[JobDefinition], list[ScheduleDefinition]]:
    """The compaction job, hourly (at :15), and the vacuum job, daily (03:00 UTC); their
    schedules run unless automation is off."""
    status = DefaultScheduleStatus.RUNNING if settings.running else DefaultScheduleStatus.STOPPED
    return [compact_job, vacuum_job], [
        ScheduleDefinition(name=COMPACT_SCHEDULE, job=compact_job, cron_schedule="15 * * * *",
                           execution_timezone="UTC", default_status=status),
        ScheduleDefinition(name=VACUUM_SCHEDULE, job=vacuum_job, cron_schedule="0 3 * * *",
                           execution_timezone="UTC", default_status=status)]
