"""The Dagster UI as a person sees it, in a real browser: after a small run (``fitness-assets demo``)
on a temporary home, ``dagster-webserver`` serves that home and a headless Chromium (Debian's
``chromium`` package, CI: ``apt-get install -y chromium``) renders the pages; the tests assert on
the text of the rendered DOM, never on GraphQL.

Why plain ``chromium --headless --dump-dom`` and no driver: the UI is a single-page app that
fetches everything through GraphQL after load, and Chromium's ``--virtual-time-budget`` holds the
page open until the network and the timers have been idle for that long (network waits do not
use up the budget), so the dumped DOM is the rendered page (checked: asset page, checks tab,
graph, automation list are all there after ~5 s). It needs no driver (no chromium-driver to keep
in step with the browser, no selenium or Node dependency) and nothing can download a browser.
When the UI is slower than the budget, a page is rendered again with a longer budget until the
text it should show appears or the attempts run out; the assertion then shows what was rendered.
``--screenshot`` gives the picture of the silver/users page (in the test's temporary folder).

No Chromium: the module is skipped with the reason when ``CI`` is not set (a developer is told
to install it); in CI (``CI`` set) it fails instead, with the install command.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fitness_assets.catalog import column_description
from fitness_assets.lakehouse.connect_server import free_port
from fitness_assets.tables import USERS

INSTALL = "apt-get update && apt-get install -y chromium"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                       reason=f"the UI tests need Debian's Chromium on PATH (`{INSTALL}`); "
                              "in CI (CI set) they fail instead of skipping"),
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium phones home at start and this network refuses it.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Containers often have a 64 MB /dev/shm, too small for the renderer.
    "--disable-dev-shm-usage",
    "--window-size=1440,2200",
)
BUDGETS_MS = (10_000, 30_000, 60_000)  # per attempt; the last attempt's page is what is asserted on
DEMO_TIMEOUT = 1200
SERVER_TIMEOUT = 180


# ---------------------------------------------------------------- the browser

class _Text(HTMLParser):
    """The text nodes of a document, without script/style/template contents."""

    HIDDEN = {"script", "style", "noscript", "template"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.nodes: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self._hidden += 1

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        text = " ".join(data.split())
        if text and not self._hidden:
            self.nodes.append(text)


def _squash(text: str) -> str:
    """Whitespace-free, so a phrase split over inline elements (Markdown code) still matches."""
    return re.sub(r"\s+", "", text)


def plain(markdown: str) -> str:
    """What the UI shows of a short Markdown text: inline code and emphasis marks disappear."""
    return re.sub(r"[`*]", "", markdown)


@dataclass
class Page:
    url: str
    nodes: list[str]
    text: str = field(init=False)

    def __post_init__(self):
        self.text = " ".join(self.nodes)

    def shows(self, phrase: str) -> bool:
        return _squash(phrase) in _squash(self.text)

    def has_node(self, text: str) -> bool:
        """An element whose own text is exactly ``text`` (a label, a name)."""
        return text in self.nodes

    def around(self, phrase: str, width: int = 400) -> str:
        """The rendered text near ``phrase``, or its first 3000 characters when absent."""
        at = self.text.find(phrase) if phrase else -1
        if at < 0:
            return self.text[:3000] + ("…" if len(self.text) > 3000 else "")
        return "…" + self.text[max(0, at - width):at + len(phrase) + width] + "…"

    def assert_shows(self, phrase: str, where: str = "") -> None:
        assert self.shows(phrase), (f"{self.url} does not show {phrase!r}{where}; "
                                    f"rendered text: {self.around(phrase)}")


def _chromium(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail(f"Chromium is not installed (no `chromium` on PATH); CI must run `{INSTALL}`")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        try:
            done = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"Chromium did not finish in {timeout} s: {' '.join(error.cmd)}")
    if done.returncode != 0:
        noise = ("dbus", "unexpected operator")  # no session bus in a container; the wrapper's /dev/shm probe
        errors = [line for line in done.stderr.splitlines() if not any(n in line for n in noise)]
        pytest.fail(f"Chromium exited with {done.returncode}: {' '.join(done.args)}\n" + "\n".join(errors[-20:]))
    return done


def render(url: str, budget_ms: int) -> Page:
    done = _chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
    parser = _Text()
    parser.feed(done.stdout)
    if not parser.nodes:
        pytest.fail(f"Chromium rendered nothing for {url} (stdout {len(done.stdout)} chars)")
    return Page(url, parser.nodes)


def screenshot(url: str, path: Path, budget_ms: int = BUDGETS_MS[1]) -> Path:
    _chromium(f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url)
    return path


# ---------------------------------------------------------------- the UI on a small run

@dataclass
class UI:
    base_url: str
    lakehouse: Path
    folder: Path
    _pages: dict[str, Page] = field(default_factory=dict)

    def page(self, path: str, *, ready: tuple[str, ...]) -> Page:
        """``path`` rendered, once it shows every ``ready`` phrase (or after the last attempt)."""
        cached = self._pages.get(path)
        if cached is not None and all(cached.shows(p) for p in ready):
            return cached
        for budget in BUDGETS_MS:
            page = render(self.base_url + path, budget)
            if all(page.shows(p) for p in ready):
                break
        self._pages[path] = page
        return page


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITNESS_", "DAGSTER_"))}
    env.update(FITNESS_LANDING_ROOT=str(tmp / "landing"), FITNESS_LAKEHOUSE_ROOT=str(tmp / "lakehouse"),
               DAGSTER_HOME=str(tmp / "dagster_home"), FITNESS_REFERENCE_DATE="2024-01-01",
               FITNESS_SPARK_DRIVER_MEMORY="1g", TZ="UTC")
    return env


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {server.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"dagster-webserver did not answer {url}/server_info within {SERVER_TIMEOUT} s:\n{_tail(log)}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the webserver's process group (its code server included)."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if shutil.which("chromium") is None:
        pytest.fail(f"Chromium is not installed (no `chromium` on PATH); CI must run `{INSTALL}`")
    tmp = tmp_path_factory.mktemp("ui")
    env = _environment(tmp)
    demo_log = tmp / "demo.log"
    with demo_log.open("w") as out:
        try:
            demo = subprocess.run([sys.executable, "-m", "fitness_assets.cli", "demo"], env=env, cwd=PROJECT_ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=DEMO_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`fitness-assets demo` did not finish in {DEMO_TIMEOUT} s:\n{_tail(demo_log)}")
    assert demo.returncode == 0, f"`fitness-assets demo` failed ({demo.returncode}):\n{_tail(demo_log)}"
    # As if someone had dismissed the "Join the Dagster community" dialog once: on a fresh home it
    # covers the page on loopback (the text is still in the DOM, the screenshot would be hidden).
    nux = Path(env["DAGSTER_HOME"]) / ".nux"
    nux.mkdir(parents=True, exist_ok=True)
    (nux / "nux.yaml").write_text("seen: 1\n")

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server_log = tmp / "webserver.log"
    with server_log.open("w") as out:
        server = subprocess.Popen([str(BIN / "dagster-webserver"), "-w", str(PROJECT_ROOT / "workspace.yaml"),
                                   "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=PROJECT_ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(base_url, server, server_log)
        yield UI(base_url, tmp / "lakehouse", tmp)
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def definitions():
    """What the code location defines (to know what the pages should show)."""
    from fitness_assets.definitions import build_definitions

    return build_definitions().get_repository_def()


# ---------------------------------------------------------------- the tests

USERS_PATH = "/assets/" + "/".join(USERS.asset_key_path)


def _key(spec):
    from dagster import AssetKey

    return AssetKey(spec.asset_key_path)


def test_asset_graph_shows_every_group(ui, definitions):
    groups = sorted({group for assets in definitions.assets_defs_by_key.values()
                     for group in assets.group_names_by_key.values()})
    assert {"sources", "reference", "bronze", "quarantine", "silver", "gold"} <= set(groups)
    page = ui.page("/asset-groups", ready=tuple(groups))
    page.assert_shows("Global asset lineage")
    missing = [g for g in groups if not page.has_node(g)]
    assert not missing, f"the asset graph does not show the groups {missing}; rendered text: {page.around('')}"


def test_silver_asset_page_shows_description_columns_lineage_row_count_and_location(ui, definitions):
    from deltalake import DeltaTable

    page = ui.page(USERS_PATH, ready=("Row count", plain(USERS.description), "comes from"))
    page.assert_shows(plain(USERS.description), " (the table's description)")
    for column in ("user_id", "device_id", "mac_address"):
        assert page.has_node(column), f"{page.url} has no column {column!r}: {page.around('Columns')}"
        page.assert_shows(plain(column_description(USERS, column)), f" (description of column {column})")
    # The column_lineage Markdown table: its header and one row per column.
    page.assert_shows("column comes from", " (the column lineage table's header)")
    lineage = definitions.assets_defs_by_key[_key(USERS)].metadata_by_key[_key(USERS)]["dagster/column_lineage"]
    for column, deps in lineage.deps_by_column.items():
        for dep in deps:
            page.assert_shows(f"{column} {'.'.join(dep.asset_key.path)}.{dep.column_name}",
                              f" (lineage row of {column})")
    rows = DeltaTable(str(ui.lakehouse / USERS.layer / USERS.name)).to_pyarrow_table().num_rows
    assert rows > 0
    assert re.search(rf"\bRow count {rows:,}\b", page.text), (
        f"{page.url} does not show 'Row count {rows:,}': {page.around('Row count')}")
    page.assert_shows(f"Storage {USERS.qualified_name}", " (the table name under Storage)")
    page.assert_shows(str(ui.lakehouse / USERS.layer / USERS.name), " (the table's location)")
    page.assert_shows("Automation condition refresh_on_new_data", " (its automation condition)")


def test_silver_asset_page_renders(ui):
    """A picture of the page (look at it when the UI changes); a blank page is a few KB."""
    shot = screenshot(ui.base_url + USERS_PATH, ui.folder / "silver_users.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{shot} is not a PNG"
    assert len(data) > 50_000, f"{shot} is only {len(data)} bytes: the page probably did not render"


def test_checks_tab_lists_the_checks_with_their_results(ui, definitions):
    checks = sorted(key.name for key in definitions.asset_checks_defs_by_key if key.asset_key == _key(USERS))
    assert "keys_unique" in checks
    page = ui.page(USERS_PATH + "?view=checks", ready=(f"Checks ({len(checks)})", *checks))
    page.assert_shows(f"Checks ({len(checks)})")
    for check in checks:
        # The list shows each check's name and the result of its latest execution.
        assert re.search(rf"\b{check}( {check})? Succeeded\b", page.text), (
            f"{page.url} does not show check {check!r} as Succeeded: {page.around(check)}")
    # The selected check's detail panel: the result of its evaluation.
    page.assert_shows("Evaluation result Passed")


def test_gold_asset_page_shows_its_automation_condition(ui):
    page = ui.page("/assets/gold/gym_summary", ready=("Automation condition",))
    page.assert_shows("Automation condition refresh_on_new_data")


def test_automation_page_lists_the_sensors(ui, definitions):
    sensors = sorted(sensor.name for sensor in definitions.sensor_defs)
    assert {"landing_files_sensor", "kafka_sensor", "table_automation_sensor"} <= set(sensors)
    page = ui.page("/automation", ready=tuple(sensors))
    for sensor in sensors:
        assert page.has_node(sensor), f"{page.url} does not list sensor {sensor!r}: {page.around('')}"
    # The sensor that evaluates the assets' automation conditions is shown as such.
    page.assert_shows("table_automation_sensor Automation condition sensor")


def test_the_demo_prints_a_line_per_step_and_neither_spark_nor_dagster_chatter(ui, definitions):
    """What the person who ran ``make demo`` saw (the same run the UI shows): one progress line
    per step of every table and its checks, the report, and none of Spark's start-up warnings
    (they go to the report folder's ``spark-driver.log``) or Dagster's DEBUG event log."""
    out = (ui.folder / "demo.log").read_text()
    steps = {m.group(1) for m in re.finditer(r"^ +\d+\.\d s  (\S+?):?(?: |$)", out, re.MULTILINE)}
    asset_steps = {assets.node_def.name for assets in definitions.assets_defs_by_key.values() if assets.is_executable}
    check_steps = {checks.node_def.name for checks in definitions.asset_checks_defs_by_key.values()}
    assert {"silver__users", "gold__workout_bpm_summary", "silver__users__checks"} <= asset_steps | check_steps
    assert asset_steps | check_steps <= steps, f"no progress line for {sorted(asset_steps | check_steps - steps)}"
    assert "Run succeeded" in out
    # The demo's data is a few hundred kB: its driver ran the quick compiler alone (FITNESS_SPARK_JIT=auto).
    assert re.search(r"^Run succeeded in [\d.]+ s \(Spark start-up [\d.]+ s: local Spark .+ \(quick JIT\)\)$",
                     out, re.MULTILINE), out[-3000:]
    for chatter in ("Setting default log level", "WARNING: Using incubator modules", " - DEBUG - ", "STEP_START"):
        assert chatter not in out, f"the demo printed {chatter!r}"
    spark_log = ui.lakehouse.parent / "report" / "spark-driver.log"
    assert spark_log.stat().st_size > 0, "Spark's own output should be in the report folder"


def test_run_verbose_prints_dagster_event_log(ui):
    env = _environment(ui.folder)
    run = subprocess.run([sys.executable, "-m", "fitness_assets.cli", "run", "--select", "reference/date_lookup",
                          "--verbose"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=DEMO_TIMEOUT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "STEP_START" in run.stdout + run.stderr, "--verbose should show Dagster's event log"
    assert re.search(r"^ +\d+\.\d s  reference__date_lookup", run.stdout, re.MULTILINE)
