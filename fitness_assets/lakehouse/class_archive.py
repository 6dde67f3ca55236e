"""A class-data sharing (CDS) archive for the local Spark driver JVM.

A local Spark driver loads and verifies tens of thousands of classes from pyspark's jars before
its first query returns; on two cores that is most of the first step's cost. Java's dynamic
CDS archive (``-XX:ArchiveClassesAtExit``, Java 13+) records the classes a JVM loaded, already
parsed and verified, and a later JVM maps them in with ``-XX:SharedArchiveFile``.

- :func:`java_options` is what the driver (and the Spark Connect server) add: the archive when
  one matching this pyspark and this Java exists, the recording options while
  :func:`recording` is active, nothing otherwise. The JVM checks the archive against its own
  build and class path and ignores one that does not match.
- The archive is written only by :func:`record` (``fitness-assets spark-archive``): the JVM
  dumps it while exiting, into a temporary file that is renamed into place after the JVM exited
  cleanly, with its size beside it, because a JVM crashes on a shortened archive. One whose
  size differs is removed instead of used; one changed in place fails the checksum the JVM
  verifies and is ignored. A process killed while recording leaves a temporary file that the
  next recording removes.

``FITNESS_SPARK_CLASS_ARCHIVE`` is ``off`` (no archive) or a folder for it; the default folder
is ``$XDG_CACHE_HOME/fitness-assets`` (``~/.cache/fitness-assets``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from fitness_assets.processes import alive

ENV = "FITNESS_SPARK_CLASS_ARCHIVE"
# CDS reports a mismatched or missing archive on stdout, which is the CLI's own output. The
# checksum (written when recording, checked when mapping) makes an archive changed in place one
# the JVM ignores; a shortened one would still crash it, which the recorded size prevents.
QUIET = ("-Xlog:cds*=off", "-Xlog:class+path*=off")
CHECKSUM = "-XX:+VerifySharedSpaces"
_recording: Path | None = None


def java_binary() -> Path | None:
    """The ``java`` that spark-submit runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is None or not candidate.is_file():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    return candidate.resolve() if candidate else None


def archive_path() -> Path | None:
    """Where the archive for this pyspark and this Java lives; None when disabled or no Java."""
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() == "off":
        return None
    java = java_binary()
    if java is None:
        return None
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    identity = f"{pyspark.__version__}|{jars.resolve()}|{java}|{java.stat().st_mtime_ns}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fitness-assets"
    return (Path(setting) if setting else cache) / f"spark-driver-{key}.jsa"


def java_options() -> list[str]:
    """JVM options for a Spark driver started now."""
    if _recording is not None:
        return [f"-XX:ArchiveClassesAtExit={_recording}", CHECKSUM, *QUIET]
    path = archive_path()
    if path is None or not path.is_file():
        return []
    if not _complete(path):
        discard()
        return []
    return [f"-XX:SharedArchiveFile={path}", "-Xshare:auto", CHECKSUM, *QUIET]


def _size_file(path: Path) -> Path:
    return path.with_name(path.name + ".size")


def _complete(path: Path) -> bool:
    """The archive has the size it was recorded with. A JVM maps the archive and reads every
    region the header names, so a shortened file crashes it (SIGBUS) instead of being ignored."""
    try:
        return _size_file(path).read_text().strip() == str(path.stat().st_size)
    except OSError:
        return False


def discard() -> None:
    """Remove the archive (a driver that did not start with it is retried without)."""
    path = archive_path()
    if path is not None:
        path.unlink(missing_ok=True)
        _size_file(path).unlink(missing_ok=True)


def _remove_abandoned(folder: Path) -> None:
    """Partial archives of recording processes that are gone (killed while recording)."""
    for partial in folder.glob("spark-driver-*.jsa.*.partial"):
        pid = partial.name.split(".")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or not alive(int(pid)):
            partial.unlink(missing_ok=True)


@contextlib.contextmanager
def recording(path: Path) -> Iterator[Path]:
    """While active, a driver that starts records its classes into ``path`` when it exits."""
    global _recording
    _recording = path
    try:
        yield path
    finally:
        _recording = None


def record(workload, timeout: float = 300.0) -> Path:
    """Run ``workload()`` on a fresh local driver that records its classes, stop that driver,
    wait until its JVM has written the archive and exited, and put the archive in place.
    ``workload`` must start the process's first Spark session."""
    from pyspark import SparkContext

    from fitness_assets.lakehouse.spark import stop_session

    path = archive_path()
    if path is None:
        raise RuntimeError(f"no class archive: {ENV}=off or no java found (set JAVA_HOME)")
    if SparkContext._gateway is not None:
        raise RuntimeError("a Spark driver already runs in this process: record the class archive in a fresh one")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path.parent)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with recording(partial):
        workload()
    gateway = SparkContext._gateway
    stop_session()
    if gateway is None:
        raise RuntimeError("the workload started no local Spark driver")
    jvm = gateway.proc
    gateway.shutdown()
    jvm.stdin.close()  # the driver exits at the end of its stdin, and dumps the archive then
    code = jvm.wait(timeout=timeout)
    SparkContext._gateway = None
    SparkContext._jvm = None
    if code != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the Spark driver exited with {code} without writing its class archive")
    sized = path.with_name(f"{path.name}.{os.getpid()}.size.partial")
    sized.write_text(str(partial.stat().st_size))
    os.replace(sized, _size_file(path))
    os.replace(partial, path)
    return path
