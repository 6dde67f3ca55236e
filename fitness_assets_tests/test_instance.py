"""The project's Dagster instance settings: runs never overlap, a run whose process died is
detected (run monitoring) instead of staying STARTED, and a deployment's own keys are kept."""

import pytest
from dagster import DagsterInstance

from fitness_assets.instance import ensure_instance


def test_the_instance_runs_one_run_at_a_time_and_monitors_runs(tmp_path):
    ensure_instance(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
        assert instance.run_monitoring_enabled
        assert "MONITORING" in instance.get_required_daemon_types()


def test_keys_a_deployment_set_are_kept(tmp_path):
    (tmp_path / "dagster.yaml").write_text("concurrency:\n  runs:\n    max_concurrent_runs: 3\n")
    ensure_instance(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 3
        assert instance.run_monitoring_enabled  # added beside it


@pytest.mark.parametrize("limit", [
    "run_queue:\n  max_concurrent_runs: 2\n",
    "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n  config:\n"
    "    max_concurrent_runs: 2\n",
])
def test_a_file_that_limits_runs_the_older_way_keeps_its_limit_and_its_comments_and_loads(tmp_path, limit):
    """Dagster refuses ``concurrency > runs`` beside ``run_queue``'s or the queued coordinator's
    limit: adding it made every entry point fail to load the instance."""
    (tmp_path / "dagster.yaml").write_text("# tuned by ops\n" + limit)
    ensure_instance(tmp_path)
    text = (tmp_path / "dagster.yaml").read_text()
    assert text.startswith("# tuned by ops\n" + limit) and "concurrency" not in text and "run_monitoring" in text
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
        assert instance.run_monitoring_enabled
    ensure_instance(tmp_path)  # nothing missing now: the file is not touched
    assert (tmp_path / "dagster.yaml").read_text() == text


def test_a_run_whose_process_died_is_marked_failed_and_a_living_one_is_not(tmp_path):
    import os
    import subprocess

    from dagster import DagsterEvent, DagsterEventType, DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun

    from fitness_assets.instance import fail_dead_runs

    def started_by(instance, run, pid):
        instance.report_dagster_event(DagsterEvent(event_type_value=DagsterEventType.RUN_START.value,
                                                   job_name=run.job_name,
                                                   message="started", pid=pid), run_id=run.run_id)

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that ran and is gone, as after kill -9
    ensure_instance(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        dead, living, launched = (DagsterRun(job_name="all_assets", status=DagsterRunStatus.STARTED) for _ in range(3))
        for run in (dead, living, launched):
            instance.add_run(run)
        started_by(instance, dead, gone.pid)
        started_by(instance, living, os.getpid())
        instance.report_engine_event("launched by the daemon", launched)  # no executing process known yet
        assert fail_dead_runs(instance) == [dead.run_id]
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(living.run_id).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(launched.run_id).status == DagsterRunStatus.STARTED


def test_a_run_that_finishes_while_it_is_inspected_is_not_marked_failed(tmp_path, monkeypatch):
    """The race seen live: a sensor lists the run as STARTED, the run succeeds and its process
    exits, then the sensor finds the process gone. The run must stay a success."""
    import subprocess

    from dagster import DagsterEvent, DagsterEventType, DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun

    import fitness_assets.instance as inst
    from fitness_assets.instance import fail_dead_runs

    gone = subprocess.Popen(["true"])
    gone.wait()
    ensure_instance(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        run = DagsterRun(job_name="all_assets", status=DagsterRunStatus.STARTED)
        instance.add_run(run)
        instance.report_dagster_event(DagsterEvent(event_type_value=DagsterEventType.RUN_START.value,
                                                   job_name=run.job_name, message="started", pid=gone.pid),
                                      run_id=run.run_id)
        real_alive = inst.alive

        def finishes_then_looks(pid):
            # the run records its success and its process exits just as it is looked at
            if instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED:
                instance.report_dagster_event(DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value,
                                                           job_name=run.job_name, message="finished", pid=pid),
                                              run_id=run.run_id)
            return real_alive(pid)

        monkeypatch.setattr(inst, "alive", finishes_then_looks)
        assert fail_dead_runs(instance) == []
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS


def test_a_failed_automation_run_will_be_retried_and_a_failed_sensor_run_will_not(tmp_path, settings):
    """Dagster decides when a run fails whether its daemon will run it again (the tag it sets is
    what the UI shows and what the daemon acts on): an automation run, yes, from its failure; a
    run of the landing or Kafka sensor, or one by hand, no (the sensors request their own again)."""
    from dagster import DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.storage.tags import WILL_RETRY_TAG

    from fitness_assets.automation.sensors import AUTOMATION_SENSOR
    from fitness_assets.definitions import build_definitions
    from fitness_assets.instance import AUTOMATION_RUN_RETRIES

    automation = next(s for s in build_definitions(settings).sensors if s.name == AUTOMATION_SENSOR)
    ensure_instance(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 0
        by_automation = DagsterRun(job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED,
                                   tags=dict(automation.run_tags))
        by_sensor = DagsterRun(job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED,
                               tags={"fitness/trigger": "kafka"})
        for run in (by_automation, by_sensor):
            instance.add_run(run)
            instance.report_run_failed(run, "the run worker was killed")
        assert instance.get_run_by_id(by_automation.run_id).tags[WILL_RETRY_TAG] == "true"
        assert instance.get_run_by_id(by_sensor.run_id).tags[WILL_RETRY_TAG] == "false"
        assert automation.run_tags["dagster/max_retries"] == str(AUTOMATION_RUN_RETRIES) == "2"
