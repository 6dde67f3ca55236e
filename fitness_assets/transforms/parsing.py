"""Typed parsing of landing values, shared by bronze validation and silver decoding.

Every parser returns NULL for a value it cannot read (never raises), so callers can tell a
missing value (input NULL) from a wrong type (input present, parse NULL). Spark runs with ANSI
mode, where a cast that overflows raises and stops the whole run; so every conversion to a
timestamp is guarded by a range check first, and an out-of-range number becomes NULL here and
``invalid_value`` at bronze instead of a crash in a later layer.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

MAC_PATTERN = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
DOB_FORMAT = "MM/dd/yyyy"
# Epoch values below this are seconds, not milliseconds (10^11 ms is 1973; 10^11 s is year 5138).
SECONDS_THRESHOLD = 10**11
# Instants the contract accepts: 1900-01-01T00:00:00Z up to 9999-12-31T23:59:59Z. Inside what a
# Spark TIMESTAMP and a Python datetime hold in any zone, and after the Julian/Gregorian switch,
# so no Parquet reader ever rebases them.
MIN_EPOCH_SECONDS = -2_208_988_800
MAX_EPOCH_SECONDS = 253_402_300_799
# A heart rate must be finite and fit the exact decimal mean of gold (decimal(18,6)).
MAX_ABS_HEARTRATE = 10**12


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def ascii_lower(value: Column) -> Column:
    """``value`` with A-Z lowered and every other character kept.

    What these callers need (headers and MAC addresses are ASCII; a non-ASCII letter lowered
    would not match them either), without Spark's ``lower``: its first use in a JVM runs the
    static set-up of Spark's collation-aware string functions (ICU case mappings), measured
    at 4-5 s on these machines, which every run on a fresh local JVM would pay in its first
    step."""
    return F.translate(value, _UPPER, _UPPER.lower())


def blank_to_null(value: Column) -> Column:
    trimmed = F.trim(value)
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def as_long(value: Column) -> Column:
    return value.try_cast("bigint")


def as_int(value: Column) -> Column:
    return value.try_cast("int")


def as_double(value: Column) -> Column:
    return value.try_cast("double")


def is_finite(number: Column) -> Column:
    """True for a number that is neither NaN nor infinite (NULL stays NULL)."""
    return ~F.isnan(number) & (F.abs(number) < F.lit(float("inf")))


def epoch_seconds_in_range(number: Column) -> Column:
    """True when a double of epoch seconds is a finite instant the contract accepts."""
    return is_finite(number) & number.between(MIN_EPOCH_SECONDS, MAX_EPOCH_SECONDS)


def epoch_seconds_to_timestamp(value: Column) -> Column:
    """Epoch seconds (integer or decimal text or number) to a µs timestamp, exactly: through a
    decimal, never a float (the original's 32-bit floats moved times by up to 128 s). NULL for
    a value that is not a number or lies outside the accepted range."""
    text = value.cast("string")
    exact = text.try_cast("decimal(24,6)")
    micros = (exact * F.lit(1_000_000)).try_cast("bigint")
    return F.when(epoch_seconds_in_range(as_double(text)) & exact.isNotNull(), F.timestamp_micros(micros))


def instant_to_timestamp(value: Column) -> Column:
    """Epoch seconds or an ISO-8601 string (the two forms `bpm.time` arrives in). A number is
    always read as epoch seconds, so an out-of-range number is NULL, not an ISO guess."""
    iso = value.try_cast("timestamp")
    iso_in_range = F.unix_micros(iso).between(MIN_EPOCH_SECONDS * 1_000_000, MAX_EPOCH_SECONDS * 1_000_000)
    return F.when(as_double(value.cast("string")).isNotNull(), epoch_seconds_to_timestamp(value)).otherwise(
        F.when(iso_in_range, iso))


def is_number(value: Column) -> Column:
    """The raw value reads as a number (NaN and infinities included)."""
    return as_double(value.cast("string")).isNotNull()


def kafka_timestamp_ms(value: Column) -> Column:
    """A Kafka record timestamp in epoch ms; values below 10^11 were written in seconds. NULL
    when not a number or outside the accepted range."""
    number = value.try_cast("decimal(24,6)")
    ms = F.when(number < F.lit(SECONDS_THRESHOLD), number * F.lit(1000)).otherwise(number)
    in_range = ms.between(MIN_EPOCH_SECONDS * 1000, MAX_EPOCH_SECONDS * 1000 + 999)
    return F.when(in_range, ms.try_cast("bigint"))


def heartrate(value: Column) -> Column:
    """A heart rate as a double; NULL unless a finite number the gold mean can hold."""
    number = as_double(value)
    return F.when(is_finite(number) & (F.abs(number) < F.lit(MAX_ABS_HEARTRATE)), number)


def parse_dob(value: Column) -> Column:
    """A ``MM/dd/yyyy`` date of birth; NULL unless a real day from year 0001 on (Spark reads
    year 0000, which no Python or Arrow date outside Spark can hold)."""
    day = F.to_date(F.try_to_timestamp(value, F.lit(DOB_FORMAT)))
    return F.when(F.year(day) >= 1, day)


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


def out_of_range(raw: Column, parsed: Column, field: str) -> tuple[Column, str]:
    """A number that was read but rejected by its range guard (NaN, infinity, too large)."""
    return invalid(raw.isNotNull() & is_number(raw) & parsed.isNull(), field)
