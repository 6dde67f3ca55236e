"""Dagster side of a layer's full rebuild on a Databricks job cluster, through Dagster Pipes.

The Databricks Asset Bundle (``databricks.yml``) deploys, per target, a job ``rebuild_layer``:
the project's wheel, the entry script ``databricks/jobs/rebuild_layer.py`` and a job cluster
sized for a backfill, with the target's catalog, schemas and volumes in its environment. The
Dagster job ``databricks_rebuild_layer`` built here does not duplicate any of that: it finds
that deployed job with the Databricks client resource (``databricks``, dagster-databricks'
``DatabricksClientResource``), takes its task and cluster, and submits them as a one-time run
with ``PipesDatabricksClient``, so Dagster shows the run's logs, its Databricks URL, and a
materialization of every rebuilt table, and cancels the cluster run if the Dagster run is
cancelled. Pipes' context and messages go through a Unity Catalog volume (the DBFS root is
not usable on Unity Catalog workspaces).

Why an op and not an asset: the rebuilt tables are already assets of this code location
(computed by the normal refresh), and one key cannot have two definitions. The op records a
materialization of each rebuilt table (with its Delta version as data version, so automation
downstream sees the change) from what the remote side reported.
"""

import copy
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from dagster import AssetKey, AssetMaterialization, Config, MetadataValue, OpExecutionContext, job, op
from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG
from dagster_databricks import DatabricksClientResource, PipesDatabricksClient
from dagster_databricks.pipes import PipesUnityCatalogVolumesContextInjector, PipesUnityCatalogVolumesMessageReader
from databricks.sdk.service import jobs
from pydantic import Field

from fitness_assets.databricks.rebuild import LAYERS, plan

JOB_NAME = "databricks_rebuild_layer"
# Tags the bundle puts on its rebuild job, by which the op finds the deployed job.
JOB_TAG, JOB_TAG_VALUE, TARGET_TAG = "fitness_job", "rebuild_layer", "fitness_target"
TASK_KEY = "rebuild_layer"
MESSAGE_KIND = "fitness_rebuild"
PIPES_VOLUME_ENV = "FITNESS_DATABRICKS_PIPES_VOLUME"


class RebuildConfig(Config):
    layer: str = Field(default="silver", description=f"layer to rebuild with everything downstream: {', '.join(LAYERS)}")
    target: str | None = Field(default=None, description="bundle target whose job runs it; FITNESS_ENV, else dev")
    pipes_volume: str | None = Field(
        default=None, description="Unity Catalog volume path for Pipes' context and messages "
                                  "(/Volumes/<catalog>/<schema>/<volume>); FITNESS_DATABRICKS_PIPES_VOLUME when unset")
    dry_run: bool = Field(default=False, description="report what would be dropped and rebuilt, change nothing")

    def resolved_target(self) -> str:
        return self.target or os.environ.get("FITNESS_ENV") or "dev"

    def resolved_volume(self, task: Mapping[str, Any]) -> str:
        """The configured volume, else FITNESS_DATABRICKS_PIPES_VOLUME of this process, else the
        one the bundle put in the deployed job cluster's environment."""
        env = (task.get("new_cluster") or {}).get("spark_env_vars") or {}
        volume = self.pipes_volume or os.environ.get(PIPES_VOLUME_ENV) or env.get(PIPES_VOLUME_ENV)
        if not volume or not volume.startswith("/Volumes/"):
            raise ValueError("the rebuild needs a Unity Catalog volume for Pipes: set pipes_volume or "
                             f"{PIPES_VOLUME_ENV} to /Volumes/<catalog>/<schema>/<volume>")
        return volume.rstrip("/")


def choose_job(jobs: Iterable[Mapping[str, Any]], target: str, user: str | None) -> Mapping[str, Any]:
    """The deployed rebuild job of ``target`` among the workspace's jobs (``jobs.list`` as
    dicts). In development mode every developer deploys their own copy (tagged ``dev: <user>``
    by the bundle); the caller's own copy wins there."""
    matches = [j for j in jobs if (j.get("settings", {}).get("tags") or {}).get(JOB_TAG) == JOB_TAG_VALUE
               and (j.get("settings", {}).get("tags") or {}).get(TARGET_TAG) == target]
    if len(matches) > 1 and user:
        mine = [j for j in matches if j.get("creator_user_name") == user]
        matches = mine or matches
    if not matches:
        raise LookupError(f"no rebuild job of target {target!r} in the workspace: deploy the bundle first "
                          f"(databricks bundle deploy -t {target})")
    if len(matches) > 1:
        ids = sorted(str(j.get("job_id")) for j in matches)
        raise LookupError(f"several rebuild jobs of target {target!r} ({', '.join(ids)}): remove the stale ones")
    return matches[0]


def submit_task(job_settings: Mapping[str, Any], layer: str, dry_run: bool = False) -> dict[str, Any]:
    """The deployed job's rebuild task as a one-time run task (``jobs.submit``): its script,
    wheel and cluster, with the layer to rebuild as parameters. A job cluster of the job
    becomes the task's ``new_cluster`` (where Pipes puts its bootstrap environment)."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}: rebuild one of {', '.join(LAYERS)}")
    tasks = [t for t in job_settings.get("tasks", []) if t.get("task_key") == TASK_KEY]
    if len(tasks) != 1:
        raise ValueError(f"the rebuild job has no single task {TASK_KEY!r}")
    task = tasks[0]
    if "spark_python_task" not in task:
        raise ValueError(f"task {TASK_KEY!r} must be a spark_python_task (the entry script)")
    out: dict[str, Any] = {
        "task_key": TASK_KEY,
        "spark_python_task": {"python_file": task["spark_python_task"]["python_file"],
                              "parameters": ["--layer", layer, *(["--dry-run"] if dry_run else [])]},
        "libraries": copy.deepcopy(task.get("libraries", [])),
    }
    if "source" in task["spark_python_task"]:  # WORKSPACE or GIT, as deployed
        out["spark_python_task"]["source"] = task["spark_python_task"]["source"]
    if "existing_cluster_id" in task:
        out["existing_cluster_id"] = task["existing_cluster_id"]
    elif "new_cluster" in task:
        out["new_cluster"] = copy.deepcopy(task["new_cluster"])
    elif "job_cluster_key" in task:
        clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job_settings.get("job_clusters", [])}
        if task["job_cluster_key"] not in clusters:
            raise ValueError(f"job cluster {task['job_cluster_key']!r} is not defined in the job")
        out["new_cluster"] = copy.deepcopy(clusters[task["job_cluster_key"]])
    else:
        # Serverless tasks (environment_key) need PipesDatabricksServerlessClient; the bundle's
        # job uses a job cluster, sized for backfills.
        raise ValueError(f"task {TASK_KEY!r} runs on no cluster this client can start")
    for key in ("timeout_seconds", "max_retries"):
        if key in task:
            out[key] = task[key]
    return out


def materializations(messages: Sequence[Any], run_metadata: Mapping[str, Any] | None = None,
                     expected: Iterable[str] = ()) -> Iterator[AssetMaterialization]:
    """An ``AssetMaterialization`` per table the remote side reported rebuilt, with its Delta
    version as data version (as the normal refresh records it). Refuses a report of a table
    the rebuild was not asked for."""
    allowed = set(expected)
    for message in messages:
        if not isinstance(message, Mapping) or message.get("kind") != MESSAGE_KIND:
            continue
        for table in message.get("tables", []):
            key = table["asset_key"]
            if allowed and key not in allowed:
                raise ValueError(f"the rebuild reported {key!r}, which it was not asked to rebuild")
            version = int(table["delta_version"])
            metadata: dict[str, Any] = {"dagster/row_count": int(table["rows"]), "dagster/uri": str(table["table"]),
                                        "delta_version": version, "rebuild": True}
            metadata.update(run_metadata or {})
            yield AssetMaterialization(
                asset_key=AssetKey.from_user_string(key), description="full rebuild on Databricks",
                metadata=metadata,
                tags={DATA_VERSION_TAG: str(version), DATA_VERSION_IS_USER_PROVIDED_TAG: "true"})


def build_databricks_rebuild_job(name: str = JOB_NAME):
    """The Dagster job that rebuilds a layer on Databricks. Needs the resource key
    ``databricks``: a ``dagster_databricks.DatabricksClientResource``."""
    @op(name="rebuild_layer_on_databricks", out={},
        description="Drop a layer's tables and those downstream and materialize them again on a Databricks "
                    "job cluster (Dagster Pipes).")
    def rebuild_layer_on_databricks(context: OpExecutionContext, config: RebuildConfig,
                                    databricks: DatabricksClientResource):
        target = config.resolved_target()
        intended = plan(config.layer)
        context.log.info(f"rebuild of {config.layer} on target {target}: drops {', '.join(intended['drops'])}"
                         + (" (dry run)" if config.dry_run else ""))
        workspace = databricks.get_client().workspace_client
        deployed = choose_job((j.as_dict() for j in workspace.jobs.list(expand_tasks=True)), target,
                              workspace.current_user.me().user_name)
        task = submit_task(deployed["settings"], config.layer, config.dry_run)
        volume = config.resolved_volume(task)
        client = PipesDatabricksClient(
            client=workspace,
            context_injector=PipesUnityCatalogVolumesContextInjector(client=workspace, volume_path=volume),
            message_reader=PipesUnityCatalogVolumesMessageReader(client=workspace, volume_path=volume),
        )
        invocation = client.run(
            context=context, task=jobs.SubmitTask.from_dict(task),
            extras={"layer": config.layer, "dry_run": config.dry_run},
            submit_args={"run_name": f"fitness rebuild {config.layer} (dagster run {context.run_id})"},
        )
        run_metadata = {k: (v if not isinstance(v, str) else MetadataValue.text(v))
                        for k, v in (invocation.metadata or {}).items()}
        yield from materializations(invocation.get_custom_messages(), run_metadata, intended["materializes"])

    @job(name=name, description="Full rebuild of a layer (and everything downstream) on a Databricks job cluster, "
                                "through Dagster Pipes; the job and cluster come from the deployed bundle.")
    def databricks_rebuild_layer():
        rebuild_layer_on_databricks()

    return databricks_rebuild_layer
