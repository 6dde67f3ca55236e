"""What a person running the CLI sees while the graph runs: one line per finished step (the
asset or check, what it wrote, how long it took) instead of Dagster's DEBUG event stream."""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

from dagster import logger

NEW_ROWS = "new_rows"  # bronze materializations say how many rows they added


def failure_reason(error) -> str:
    """What failed a step, in one line: the user's error, not Dagster's wrapper of it; its
    first line, with the lines after it when it ends in a colon (a failed blocking check
    names its asset and checks there)."""
    while error is not None and error.cause is not None:
        error = error.cause
    lines = [line.strip() for line in (error.message if error else "failed").strip().splitlines() if line.strip()]
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        first = f"{first} {'; '.join(lines[1:])}"
    return _MODULE_PATH.sub("", first)[:600]


_MODULE_PATH = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )")  # "pkg.mod.Error: ..." -> "Error: ..."


class StepProgress(logging.Handler):
    """Prints a line when a step succeeds, fails or is skipped, from the Dagster events that
    pass through the run's loggers."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(level=logging.DEBUG)
        self.stream = stream or sys.stdout
        self._written: dict[str, list[str]] = {}
        self._checks: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is None:
            return
        step, kind = event.step_key or "", event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            rows = materialization.metadata.get(NEW_ROWS)
            total = materialization.metadata.get("dagster/row_count")
            text = materialization.asset_key.to_user_string()
            if rows is not None:
                text += f" +{rows.value:,}"
            if total is not None:
                text += f" ({total.value:,} rows)"
            self._written.setdefault(step, []).append(text)
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            self._checks.setdefault(step, []).append(
                f"{evaluation.check_name} {'passed' if evaluation.passed else evaluation.severity.value.lower()}")
        elif kind == "STEP_SUCCESS":
            seconds = event.event_specific_data.duration_ms / 1000
            done = self._written.pop(step, []) + self._checks.pop(step, [])
            self._line(f"  {seconds:6.1f} s  {step}" + (f": {', '.join(done)}" if done else ""))
        elif kind == "STEP_FAILURE":
            self._line(f"  FAILED    {step}: {failure_reason(event.event_specific_data.error)}")
        elif kind == "STEP_SKIPPED":
            self._line(f"  skipped   {step} (an upstream step did not produce its output)")

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


@logger(description="One line per finished step: the CLI's progress.")
def progress_logger(_) -> logging.Logger:
    log = logging.getLogger("fitness_assets.progress")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.handlers = [StepProgress()]
    return log
