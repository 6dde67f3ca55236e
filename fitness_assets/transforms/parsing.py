"""Typed parsing of landing values, shared by bronze validation and silver decoding.

Every parser returns NULL for a value it cannot read (never raises), so callers can tell a
missing value (input NULL) from a wrong type (input present, parse NULL).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

MAC_PATTERN = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
DOB_FORMAT = "MM/dd/yyyy"
# Epoch values below this are seconds, not milliseconds (10^11 ms is 1973; 10^11 s is year 5138).
SECONDS_THRESHOLD = 10**11


def blank_to_null(value: Column) -> Column:
    trimmed = F.trim(value)
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def as_long(value: Column) -> Column:
    return value.try_cast("bigint")


def as_int(value: Column) -> Column:
    return value.try_cast("int")


def as_double(value: Column) -> Column:
    return value.try_cast("double")


def epoch_seconds_to_timestamp(value: Column) -> Column:
    """Epoch seconds (integer or decimal text or number) to a µs timestamp, exactly: through a
    decimal, never a float (the original's 32-bit floats moved times by up to 128 s)."""
    micros = (value.cast("string").try_cast("decimal(24,6)") * F.lit(1_000_000)).cast("bigint")
    return F.timestamp_micros(micros)


def instant_to_timestamp(value: Column) -> Column:
    """Epoch seconds or an ISO-8601 string (the two forms `bpm.time` arrives in)."""
    return F.coalesce(epoch_seconds_to_timestamp(value), value.try_cast("timestamp"))


def kafka_timestamp_ms(value: Column) -> Column:
    """A Kafka record timestamp in epoch ms; values below 10^11 were written in seconds."""
    number = value.try_cast("decimal(24,6)")
    return F.when(number < F.lit(SECONDS_THRESHOLD), number * F.lit(1000)).otherwise(number).cast("bigint")


def parse_dob(value: Column) -> Column:
    return F.to_date(F.try_to_timestamp(value, F.lit(DOB_FORMAT)))


def first_problem(*checks: tuple[Column, str]) -> Column:
    """The reason of the first failing check, NULL when every check passes."""
    expr = F.lit(None).cast("string")
    for failed, reason in reversed(checks):
        expr = F.when(failed, F.lit(reason)).otherwise(expr)
    return expr


def missing(raw: Column, field: str) -> tuple[Column, str]:
    return raw.isNull(), f"missing_field:{field}"


def wrong_type(raw: Column, parsed: Column, field: str) -> tuple[Column, str]:
    return raw.isNotNull() & parsed.isNull(), f"wrong_type:{field}"


def invalid(condition: Column, field: str) -> tuple[Column, str]:
    return F.coalesce(condition, F.lit(False)), f"invalid_value:{field}"
