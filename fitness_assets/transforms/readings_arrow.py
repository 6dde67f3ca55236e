"""Heart-rate readings decoded by Arrow, without Spark, where a payload's form makes it exact.

Spark decodes a `bpm` payload (``transforms.bronze.decode_kafka``) by reading every field as
the text its JSON reader gives it, then casting that text. For a payload in the producer's
compact form, ``{"device_id":D,"time":T,"heartrate":H}`` with nothing else, this module gets
the same values from the payload's own text with Arrow's regular expressions and casts, which
run outside the GIL and need no JVM (measured on 4.3M payloads: ~1.3 s against ~12 s of Spark's
JSON decoding on two cores). Why each field comes out as Spark's:

- ``device_id``: at most 18 digits, no sign or leading zero. Spark's reader copies an integer
  token's digits, and ``try_cast('bigint')`` of them is the number.
- ``heartrate``: ``null`` or a number of at most 9 integer and 12 fraction digits (no exponent,
  no negative zero). Spark's reader re-writes a float token as the text of its double, which reads
  back as that same double; Arrow parses the original text to the nearest double too, so both
  hold the same double. Such a number is finite and inside the contract's bound.
- ``time`` as epoch seconds: at most 10 integer digits below 4 * 10^9 and at most 6 fraction
  digits. Spark takes the text of the double, rounded half up to microseconds through a
  ``decimal(24,6)``. Below 2^32 seconds a double is within 2^-22 s of the written value and its
  text within another 2^-22 s, so the text lies less than 5 * 10^-7 s from the written value,
  which has whole microseconds: the rounding gives back exactly the written value.
- ``time`` as an ISO-8601 instant: ``YYYY-MM-DDTHH:MM:SS`` with up to 6 fraction digits and
  ``Z``, years 1900-2999, a day the month has. Spark's string cast reads it as that UTC instant.

Every other payload (another form, more digits, a sign, another zone) is left to Spark's
decoder by the caller. ``fitness_assets_tests/test_readings_arrow.py`` decodes the same
payloads both ways and requires identical readings.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fitness_assets.transforms.kafka_arrow import split_once

READINGS_SCHEMA = pa.schema([pa.field("device_id", pa.int64()), pa.field("time", pa.timestamp("us", tz="UTC")),
                             pa.field("heartrate", pa.float64())])

_ISO = (r'"(?:19|2[0-9])[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])'
        r'T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?Z"')
_SECONDS = r'(?:0|[1-9][0-9]{0,8}|[1-3][0-9]{9})(?:\.[0-9]{1,6})?'
# A negative zero is left out: Spark keeps the sign where Arrow's maximum may not.
_HEARTRATE = r'(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,12})?|-(?:[1-9][0-9]{0,8}(?:\.[0-9]{1,12})?|0\.[0-9]{0,11}[1-9])'
COMPACT_READING = (
    r'\A\{"device_id":(?:0|[1-9][0-9]{0,17}),"time":(?:' + _SECONDS + "|" + _ISO + r'),'
    r'"heartrate":(?:null|' + _HEARTRATE + r')\}\z')
_THREADS = max(1, min(4, os.cpu_count() or 1))
_MICROS = 1_000_000
_UTC = pa.timestamp("us", tz="UTC")


def _seconds_micros(text: pa.Array) -> pa.Array:
    """Epoch seconds with at most 6 fraction digits (and 10 integer digits) as microseconds."""
    exact = pc.cast(text, pa.decimal128(17, 6))
    return pc.cast(pc.multiply(exact, pa.scalar(_MICROS, pa.decimal128(7, 0))), pa.int64())


def _iso_micros(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Quoted ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` instants as microseconds, and whether each is a
    real day: Arrow's strptime rolls a day the month lacks (02-30) over into the next month,
    where Spark's cast gives no instant, so the parse must give the same day back."""
    seconds = pc.strptime(pc.utf8_slice_codeunits(text, 1, 20), format="%Y-%m-%dT%H:%M:%S", unit="s",
                          error_is_null=True)
    same_day = pc.fill_null(pc.equal(pc.strftime(seconds, format="%Y-%m-%d"), pc.utf8_slice_codeunits(text, 1, 11)),
                            False)
    fraction = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.utf8_slice_codeunits(text, 21, -2), 0, 6), width=6,
                            padding="0")
    micros = pc.add(pc.multiply(pc.cast(seconds, pa.int64()), pa.scalar(_MICROS, pa.int64())),
                    pc.cast(fraction, pa.int64()))
    return micros, same_day


def _piece(values: pa.Array) -> tuple[np.ndarray, pa.Table]:
    """Which payloads of one piece are compact and decode exactly, and their readings (in no
    particular order)."""
    matched = pc.match_substring_regex(values, COMPACT_READING).to_numpy(zero_copy_only=False)
    # In a matching payload each separator occurs once, where the pattern puts it: the fields
    # are cut at them (quicker than extracting a pattern's groups, as for the landing lines).
    head, heartrate = split_once(values.filter(pa.array(matched)), ',"heartrate":')
    device_id, time = split_once(head, ',"time":')
    device_id, heartrate = pc.utf8_slice_codeunits(device_id, len('{"device_id":')), pc.utf8_slice_codeunits(heartrate, 0, -1)
    iso = pc.starts_with(time, '"').to_numpy(zero_copy_only=False)
    micros = _seconds_micros(time.filter(pa.array(~iso)))
    taken = [pa.array(~iso)]
    if iso.any():
        iso_micros, real = _iso_micros(time.filter(pa.array(iso)))
        micros = pa.concat_arrays([micros, iso_micros.filter(real)])
        real = real.to_numpy(zero_copy_only=False)
        position = np.flatnonzero(matched)
        matched[position[np.flatnonzero(iso)[~real]]] = False
        kept = np.zeros(len(iso), dtype=bool)
        kept[np.flatnonzero(iso)[real]] = True
        taken.append(pa.array(kept))
    columns = {
        "device_id": pc.cast(device_id, pa.int64()),
        "heartrate": pc.cast(pc.if_else(pc.equal(heartrate, "null"), pa.scalar(None, pa.string()), heartrate),
                             pa.float64()),
    }
    rows = [{name: column.filter(mask) for name, column in columns.items()} for mask in taken]
    return matched, pa.table({
        "device_id": pa.concat_arrays([r["device_id"] for r in rows]),
        "time": pc.cast(micros, pa.int64()).cast(_UTC),
        "heartrate": pa.concat_arrays([r["heartrate"] for r in rows]),
    }, schema=READINGS_SCHEMA)


def compact_readings(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Table]:
    """Which ``bpm`` payloads (bronze ``value``) this module decodes (a boolean mask), and
    their readings (``device_id``, ``time``, ``heartrate``) in payload order. The payloads are
    matched in pieces on several threads (Arrow's kernels release the GIL)."""
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values], values.type)
    if values.type != pa.string():
        values = values.cast(pa.string())
    size = max(1, -(-len(values) // _THREADS))
    pieces = [chunk.slice(start, size) for chunk in values.chunks for start in range(0, len(chunk), size)]
    if not pieces:
        return np.zeros(0, dtype=bool), READINGS_SCHEMA.empty_table()
    with ThreadPoolExecutor(_THREADS) as pool:
        found = list(pool.map(_piece, pieces))
    return np.concatenate([m for m, _ in found]), pa.concat_tables([t for _, t in found])


def per_instant(readings: pa.Table) -> pa.Table:
    """Silver ``heart_rate`` rows of decoded readings (``transforms.silver.heart_rate``'s rule):
    one per device and instant with the highest heart rate reported for it (NULL when none
    was), ``valid`` when that is present and positive. The readings' heart rates are finite
    (the decoders make NaN and infinities NULL)."""
    grouped = readings.group_by(["device_id", "time"], use_threads=True).aggregate([("heartrate", "max")])
    heartrate = grouped.column("heartrate_max")
    valid = pc.fill_null(pc.greater(heartrate, 0.0), False)
    return pa.table({"device_id": grouped.column("device_id"), "time": grouped.column("time"),
                     "heartrate": heartrate, "valid": valid})
