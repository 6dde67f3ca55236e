"""The local Spark driver's class archive (Java CDS, ``lakehouse.class_archive``), on real JVMs.

Each case runs in a subprocess: the archive is chosen when a driver JVM starts, and a process
has one driver for life."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fitness_assets.lakehouse import class_archive

pytestmark = pytest.mark.slow

START = textwrap.dedent("""
    from fitness_assets.lakehouse.spark import SparkSettings, get_session
    extra = {{"spark.driver.extraJavaOptions": {java!r}}} if {java!r} else {{}}
    spark = get_session(SparkSettings(driver_memory="1g", extra_conf=extra))
    print("rows", spark.range(5).selectExpr("sum(id) AS s").collect()[0]["s"])
""")


def _python(code: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


@pytest.fixture
def archive_env(tmp_path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")} | {
        class_archive.ENV: str(tmp_path / "cache")}


def _archive(env: dict[str, str]) -> Path:
    saved = os.environ.get(class_archive.ENV)
    os.environ[class_archive.ENV] = env[class_archive.ENV]
    try:
        return class_archive.archive_path()
    finally:
        os.environ.pop(class_archive.ENV) if saved is None else os.environ.__setitem__(class_archive.ENV, saved)


def test_a_recorded_archive_is_mapped_by_the_next_driver_and_a_damaged_one_is_dropped(archive_env):
    path = _archive(archive_env)
    assert path is not None and not path.exists()
    # An abandoned partial archive of a process that is gone is removed by the next recording.
    path.parent.mkdir(parents=True)
    abandoned = path.with_name(f"{path.name}.999999999.partial")
    abandoned.write_bytes(b"half an archive")

    record = textwrap.dedent("""
        from fitness_assets.lakehouse import class_archive
        from fitness_assets.lakehouse.spark import SparkSettings, get_session
        path = class_archive.record(lambda: get_session(SparkSettings(driver_memory="1g")).range(3).count())
        print("recorded", path)
    """)
    done = _python(record, archive_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"recorded {path}" in done.stdout
    assert path.stat().st_size > 10 * 2**20  # tens of thousands of classes
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{path.name}.size"], \
        "partial archives left behind"

    # The next driver loads Spark's classes from the archive (the JVM's class-load log says
    # where each class came from; the recorded archive is the "top" layer).
    loads = path.parent.parent / "class-load.log"
    mapped = _python(START.format(java=f"-Xlog:class+load=info:file={loads}"), archive_env)
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    assert mapped.stdout.strip() == "rows 10", f"the JVM wrote to the program's output: {mapped.stdout!r}"
    spark_classes = [line for line in loads.read_text().splitlines() if " org.apache.spark." in line]
    from_archive = [line for line in spark_classes if "shared objects file (top)" in line]
    assert len(from_archive) > 1000 and len(from_archive) > len(spark_classes) / 2, (
        f"{len(from_archive)} of {len(spark_classes)} Spark classes came from the archive")

    # A driver that cannot start for its own reason (here a heap it cannot reserve) fails with
    # that reason, and the archive, not at fault, is kept.
    broken = _python(START.format(java="").replace('driver_memory="1g"', 'driver_memory="100000t"'), archive_env)
    assert broken.returncode != 0 and "JAVA_GATEWAY_EXITED" in broken.stderr, broken.stderr[-3000:]
    assert path.is_file(), "an archive that was not at fault was dropped"

    # Changed in place (same size): the JVM's checksum rejects it and it starts without.
    data = bytearray(path.read_bytes())
    path.chmod(0o644)
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    corrupt = _python(START.format(java=""), archive_env, cwd=path.parent)
    assert corrupt.returncode == 0, corrupt.stderr[-3000:]
    assert corrupt.stdout.strip() == "rows 10", corrupt.stdout[-3000:]

    # Shortened: a JVM would crash mapping it (SIGBUS), so it is removed instead of used.
    path.write_bytes(bytes(data[: len(data) // 50]))
    shortened = _python(START.format(java=""), archive_env, cwd=path.parent)
    assert shortened.returncode == 0, shortened.stderr[-3000:]
    assert shortened.stdout.strip() == "rows 10", shortened.stdout[-3000:]
    assert not path.exists(), "the shortened archive was kept"
    assert not list(path.parent.glob("hs_err*")), "a JVM crashed"


def test_the_archive_can_be_turned_off(archive_env, monkeypatch):
    monkeypatch.setenv(class_archive.ENV, "off")
    assert class_archive.archive_path() is None
    assert class_archive.java_options() == []
    with pytest.raises(RuntimeError, match=f"{class_archive.ENV}=off"):
        class_archive.record(lambda: None)
