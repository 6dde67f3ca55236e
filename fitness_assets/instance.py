"""The project's Dagster instance settings (``$DAGSTER_HOME/dagster.yaml``).

- One run at a time: every run writes Delta tables, and runs that write the same tables must
  never overlap (the table store would retry conflicting commits, but two Spark JVMs on a
  2-core machine only slow each other down).
- Run monitoring: a run whose process died (kill -9, OOM) is marked failed instead of staying
  STARTED forever.
- No telemetry, and no "join the community" dialog over the UI.

Keys already in an existing file are left as they are: a deployment may tune them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fitness_assets.settings import DEFAULT_DATA_ROOT

INSTANCE_SETTINGS: dict[str, Any] = {
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
    "concurrency": {"runs": {"max_concurrent_runs": 1}},
    "run_monitoring": {"enabled": True, "start_timeout_seconds": 180, "poll_interval_seconds": 30,
                       "max_resume_run_attempts": 0},
}


def dagster_home() -> Path:
    return Path(os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DATA_ROOT / "dagster_home")))


def ensure_instance(home: Path | None = None) -> Path:
    """Create ``home`` with the project's ``dagster.yaml``; add missing keys to an existing one."""
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    current = (yaml.safe_load(config.read_text()) or {}) if config.exists() else {}
    merged = {**INSTANCE_SETTINGS, **current}
    if merged != current:
        config.write_text(yaml.safe_dump(merged, sort_keys=False))
    return config
