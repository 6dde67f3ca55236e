"""Platform settings, read from the environment when asked for (never at import time).

Every variable is optional; defaults keep all state inside the checkout's ignored ``.data/``
folder so that one command runs the whole lakehouse on a laptop.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fitness_assets.lakehouse.codegen import DEFAULT_COMPILE_FROM_ROWS
from fitness_assets.lakehouse.spark import (
    DEFAULT_DRIVER_MEMORY,
    DEFAULT_JIT,
    DEFAULT_MASTER,
    DEFAULT_MODE,
    JIT_MODES,
    MODES,
    connect_url_problem,
    driver_memory_problem,
    master_problem,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = PROJECT_ROOT / ".data"


LAYERS = ("reference", "bronze", "quarantine", "silver", "gold")
TABLE_BACKENDS = ("delta-rs", "spark-delta")


class ConfigError(ValueError):
    """A setting the platform cannot use; the message says which and what to set."""


T = TypeVar("T")
D = TypeVar("D")


def _env_value(env: dict[str, str], name: str, default: D, parse: Callable[[str], T],
               valid: Callable[[T], bool], expected: str, strip: bool = True) -> T | D:
    """``env[name]`` parsed (``default`` when unset); one that does not parse or is not valid
    is a ``ConfigError`` saying what ``name`` must be."""
    text = env.get(name) or ""
    text = text.strip() if strip else text
    if not text:
        return default
    try:
        value = parse(text)
    except ValueError:
        raise ConfigError(f"{name} must be {expected}, not {text!r}") from None
    if not valid(value):
        raise ConfigError(f"{name} must be {expected}, not {text!r}")
    return value


MAX_INT_SETTING = 2**31 - 1
MAX_MINUTES = 366 * 24 * 60  # a freshness window longer than a year means none


def env_int(env: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    """``env[name]`` as a whole number from ``minimum`` to 2^31 - 1 (``default`` when unset)."""
    return _env_value(env, name, default, int, lambda value: minimum <= value <= MAX_INT_SETTING,
                      f"a whole number from {minimum} to {MAX_INT_SETTING}")


def env_minutes(env: dict[str, str], name: str, default: float) -> float:
    """``env[name]`` as a freshness window in minutes (``default`` when unset): at least 2 (it
    warns at half the window, and Dagster's shortest window is a minute), at most a year."""
    return _env_value(env, name, default, float, lambda value: 2 <= value <= MAX_MINUTES,
                      f"a number of minutes from 2 to {MAX_MINUTES} (a year)")


FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(9999, 12, 31)  # the times records may carry


def env_date(env: dict[str, str], name: str, default: D) -> dt.date | D:
    """``env[name]`` as an ISO date from 1900-01-01 to 9999-12-31 (``default`` when unset)."""
    return _env_value(env, name, default, dt.date.fromisoformat, lambda day: FIRST_DAY <= day <= LAST_DAY,
                      f"an ISO date from {FIRST_DAY} to {LAST_DAY}, such as 2024-01-01")


def env_choice(env: dict[str, str], name: str, default: str, choices: Sequence[str]) -> str:
    """``env[name]``, one of ``choices`` (``default`` when unset)."""
    return _env_value(env, name, default, str, lambda value: value in choices, f"one of {', '.join(choices)}",
                      strip=False)


def env_checked(env: dict[str, str], name: str, problem: Callable[[str], str | None]) -> str | None:
    """``env[name]`` stripped (None when unset); a ``ConfigError`` saying what it must be when
    ``problem`` finds one."""
    text = (env.get(name) or "").strip()
    wrong = problem(text) if text else None
    if wrong:
        raise ConfigError(f"{name} must be {wrong}, not {text!r}")
    return text or None


def _default_catalog(env: dict[str, str]) -> str | None:
    """On Unity Catalog each environment has its catalog, ``fitness_<FITNESS_ENV>``."""
    if (env.get("FITNESS_TABLE_BACKEND") or "delta-rs") == "spark-delta" and env.get("FITNESS_ENV"):
        return f"fitness_{env['FITNESS_ENV']}"
    return None


@dataclass(frozen=True)
class Settings:
    """Where data lives and the knobs that change results (reference date, date range)."""

    landing_root: str
    lakehouse_root: str
    reference_date: dt.date | None
    date_lookup_start: dt.date
    date_lookup_end: dt.date
    max_files_per_batch: int
    max_batches_per_run: int
    backend: str = "delta-rs"
    catalog: str | None = None
    erasure_retention_hours: int = 168
    environment: str = "local"
    schemas: tuple[tuple[str, str], ...] = ()  # layer -> schema, where it is not the layer's name

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        backend = env_choice(env, "FITNESS_TABLE_BACKEND", "delta-rs", TABLE_BACKENDS)
        start = env_date(env, "FITNESS_DATE_LOOKUP_START", dt.date(2020, 1, 1))
        end = env_date(env, "FITNESS_DATE_LOOKUP_END", dt.date(2030, 12, 31))
        if end < start:
            raise ConfigError(f"FITNESS_DATE_LOOKUP_END ({end}) is before FITNESS_DATE_LOOKUP_START ({start})")
        lakehouse_root = (env.get("FITNESS_LAKEHOUSE_ROOT") or "").strip() or str(DEFAULT_DATA_ROOT / "lakehouse")
        if "%" in lakehouse_root and "://" not in lakehouse_root:
            raise ConfigError(f"FITNESS_LAKEHOUSE_ROOT ({lakehouse_root}) must not hold a '%': delta-rs reads a path "
                              "as a URL, so '%20' would name another folder")
        return cls(
            landing_root=(env.get("FITNESS_LANDING_ROOT") or "").strip() or str(DEFAULT_DATA_ROOT / "landing"),
            lakehouse_root=lakehouse_root,
            reference_date=env_date(env, "FITNESS_REFERENCE_DATE", None),
            date_lookup_start=start,
            date_lookup_end=end,
            max_files_per_batch=env_int(env, "FITNESS_MAX_FILES_PER_BATCH", 64),
            max_batches_per_run=env_int(env, "FITNESS_MAX_BATCHES_PER_RUN", 1000),
            backend=backend,
            erasure_retention_hours=env_int(env, "FITNESS_ERASURE_RETENTION_HOURS", 168, minimum=0),
            catalog=env.get("FITNESS_CATALOG") or _default_catalog(env),
            environment=env.get("FITNESS_ENV") or "local",
            schemas=tuple((layer, env[f"FITNESS_SCHEMA_{layer.upper()}"]) for layer in LAYERS
                          if env.get(f"FITNESS_SCHEMA_{layer.upper()}")),
        )

    def effective_reference_date(self) -> dt.date:
        """The date ages are computed at: configured, or today (UTC) when unset."""
        return self.reference_date or dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class SparkEnv:
    """Which Spark to use: FITNESS_SPARK_MODE (local | connect | databricks) and its details."""

    mode: str = DEFAULT_MODE
    master: str = DEFAULT_MASTER
    connect_url: str | None = None
    driver_memory: str = DEFAULT_DRIVER_MEMORY
    compile_from_rows: int = DEFAULT_COMPILE_FROM_ROWS
    jit: str = DEFAULT_JIT

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SparkEnv:
        env = dict(os.environ if env is None else env)
        compile_from = env.get("FITNESS_SPARK_COMPILE_FROM_ROWS") or str(DEFAULT_COMPILE_FROM_ROWS)
        if not compile_from.isdecimal():
            raise ConfigError(f"FITNESS_SPARK_COMPILE_FROM_ROWS must be a whole number of rows (0: always compile), "
                              f"not {compile_from!r}")
        return cls(
            jit=env_choice(env, "FITNESS_SPARK_JIT", DEFAULT_JIT, JIT_MODES),
            compile_from_rows=int(compile_from),
            mode=env_choice(env, "FITNESS_SPARK_MODE", DEFAULT_MODE, MODES),
            master=env_checked(env, "FITNESS_SPARK_MASTER", master_problem) or DEFAULT_MASTER,
            connect_url=env_checked(env, "FITNESS_SPARK_CONNECT_URL", connect_url_problem),
            driver_memory=env_checked(env, "FITNESS_SPARK_DRIVER_MEMORY", driver_memory_problem) or DEFAULT_DRIVER_MEMORY,
        )


LAYERS_WITH_FRESHNESS = ("sources", "bronze", "quarantine", "silver", "gold")
# Minutes after the last update at which a table fails its freshness policy; it warns at half.
DEFAULT_FRESHNESS_MINUTES = {"sources": 10.0, "bronze": 10.0, "quarantine": 10.0, "silver": 15.0, "gold": 20.0}


@dataclass(frozen=True)
class AutomationSettings:
    """How the platform keeps itself fresh: sensors, the micro-batch interval, freshness windows.

    ``FITNESS_AUTOMATION=off`` leaves the sensors and the automation sensor stopped (they can
    still be started from the UI); ``FITNESS_MICROBATCH_SECONDS`` is the shortest time between
    two evaluations of a sensor, so no table is refreshed more often than that;
    ``FITNESS_FRESHNESS_<LAYER>_MINUTES`` sets a layer's fail window.
    """

    running: bool = True
    microbatch_seconds: int = 30
    freshness_minutes: tuple[tuple[str, float], ...] = tuple(DEFAULT_FRESHNESS_MINUTES.items())

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AutomationSettings:
        env = dict(os.environ if env is None else env)
        switch = (env.get("FITNESS_AUTOMATION") or "on").strip().lower()
        if switch not in ("on", "off"):
            raise ConfigError(f"FITNESS_AUTOMATION must be 'on' or 'off', not {switch!r}")
        seconds = env_int(env, "FITNESS_MICROBATCH_SECONDS", 30)
        minutes = {layer: env_minutes(env, f"FITNESS_FRESHNESS_{layer.upper()}_MINUTES", default)
                   for layer, default in DEFAULT_FRESHNESS_MINUTES.items()}
        return cls(running=switch == "on", microbatch_seconds=seconds, freshness_minutes=tuple(minutes.items()))

    def fail_minutes(self, layer: str) -> float | None:
        return dict(self.freshness_minutes).get(layer)
