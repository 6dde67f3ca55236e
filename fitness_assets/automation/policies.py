"""Automation conditions and freshness policies, applied per layer by ``definitions``.

Bronze is driven by the source sensors (new files, new Kafka records). Silver and gold run
when an upstream table's *data* changed: the data version of every table is the Delta
version of its last change of rows, so a run that wrote nothing (or only its progress) does
not make anything downstream run or look stale.
"""

from __future__ import annotations

import datetime as dt

from dagster import AutomationCondition, FreshnessPolicy

from fitness_assets.settings import AutomationSettings


def upstream_data_changed() -> AutomationCondition:
    """An upstream table's data version moved since the last tick (not in a run that already
    covered this asset), or an upstream is requested on this very tick."""
    return AutomationCondition.any_deps_match(
        (AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target())
        | AutomationCondition.will_be_requested()
    ).with_label("upstream_data_changed")


def upstream_checks_not_failed() -> AutomationCondition:
    """No upstream blocking check has failed (unless that upstream runs again in the same run,
    where Dagster's blocking checks stop this asset if they fail again). A check that has not
    run yet has not failed: a fresh graph fills in one run instead of one layer per tick."""
    failed = AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)
    return ~AutomationCondition.any_deps_match(
        failed & ~AutomationCondition.will_be_requested()
    ).with_label("no_upstream_blocking_check_failed")


def freshness_catch_up() -> AutomationCondition:
    """The asset just failed its freshness policy while its upstreams did not: something it
    should have taken in is waiting (a failed run, a missed tick). When an upstream failed
    too, the cause is upstream (no data arriving) and a refresh here would change nothing."""
    return (
        AutomationCondition.freshness_failed().newly_true()
        & ~AutomationCondition.any_deps_match(AutomationCondition.freshness_failed())
    ).with_label("freshness_catch_up")


def never_materialized() -> AutomationCondition:
    """The asset has no materialization yet (a new table, a new instance, upstreams filled by
    hand before automation started: no data version moves then), until it is requested or
    materialized. Unlike ``since_last_handled``, the first tick counts (a missing table is
    what it is for), and a failed request is not repeated every tick."""
    missing = AutomationCondition.missing()
    became_missing = missing & (missing.newly_true() | AutomationCondition.initial_evaluation())
    return became_missing.since(
        AutomationCondition.newly_requested() | AutomationCondition.newly_updated()).with_label("never_materialized")


def refresh_condition() -> AutomationCondition:
    """Silver and gold: refresh on new upstream data, when never materialized, or on a
    freshness failure, once upstream blocking checks passed, never while this asset is
    queued or running. An upstream in progress does not hold it: under a steady stream the
    bronze Kafka run is queued or running at almost every tick (both sensors tick at the same
    interval), which held silver and gold back for as long as records kept arriving. A refresh
    reads committed Delta versions and records what it took in, and the instance runs one run
    at a time, in order."""
    return (
        (upstream_data_changed().since_last_handled() | never_materialized() | freshness_catch_up())
        & upstream_checks_not_failed()
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.in_progress()
    ).with_label("refresh_on_new_data")


def ingestion_condition() -> AutomationCondition:
    """Bronze: the sensors start ingestion; automation only catches up after a freshness
    failure whose cause is not upstream."""
    return (freshness_catch_up() & ~AutomationCondition.in_progress()).with_label("catch_up_when_stale")


def freshness_policy(settings: AutomationSettings, layer: str) -> FreshnessPolicy | None:
    """Time-window policy of a layer: fails after its window, warns at half of it."""
    minutes = settings.fail_minutes(layer)
    if minutes is None:
        return None
    return FreshnessPolicy.time_window(fail_window=dt.timedelta(minutes=minutes),
                                       warn_window=dt.timedelta(minutes=minutes / 2))


CONDITION_BY_LAYER = {
    "bronze": ingestion_condition,
    "quarantine": ingestion_condition,
    "silver": refresh_condition,
    "gold": refresh_condition,
}


def condition_for(layer: str) -> AutomationCondition | None:
    factory = CONDITION_BY_LAYER.get(layer)
    return factory() if factory else None
