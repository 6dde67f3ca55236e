"""The project's Dagster instance settings: runs never overlap, a run whose process died is
detected (run monitoring) instead of staying STARTED, and a deployment's own keys are kept."""

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
