"""Hostile landing input: a corpus of bad files, names and values, each with its expected
outcome, plus one test per bug of the ingestion-robustness issue (real Spark, real Delta)."""

from __future__ import annotations

import bz2
import gzip
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fitness_assets.assets.bronze.checks import reconcile
from fitness_assets.lakehouse.store import DeltaRsTableStore, LakehouseNotWritable
from fitness_assets.pipelines.bronze import IngestConfigError, ingest, ingested_files, ingested_landing, reason_counts
from fitness_assets.tables import (
    GYM_LOGINS_BZ,
    GYM_LOGINS_QR,
    KAFKA_MULTIPLEX_BZ,
    KAFKA_MULTIPLEX_QR,
    REGISTERED_USERS_BZ,
    REGISTERED_USERS_QR,
)
from fitness_assets.transforms import bronze as parsers
from fitness_assets_tests.helpers import BRONZE_SELECTION, spark_reads, versions

RU, GL, KM = "registered_users", "gym_logins", "kafka_multiplex"
TABLES = {RU: (REGISTERED_USERS_BZ, REGISTERED_USERS_QR), GL: (GYM_LOGINS_BZ, GYM_LOGINS_QR),
          KM: (KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR)}
RU_HEADER = "user_id,device_id,mac_address,registration_timestamp"
GL_HEADER = "mac_address,gym,login,logout"
T0 = 1678095123  # 2023-03-06 09:32:03 UTC


@pytest.fixture(params=["arrow reads", "spark reads"])
def either_store(request, store):
    """The reconciliation's two ways to count bronze and quarantine rows, on the same tables."""
    return store if request.param == "arrow reads" else spark_reads(store)


def ru(*rows: str, header: str = RU_HEADER, end: str = "\n") -> bytes:
    return end.join([header, *rows]).encode() + end.encode()


def ru_row(uid: object = 1, reg: object = T0, device: object = 11, mac: str = "aa:bb:cc:dd:ee:01") -> str:
    return f"{uid},{device},{mac},{reg}"


def gl(*rows: str, end: str = "\n") -> bytes:
    return end.join([GL_HEADER, *rows]).encode() + end.encode()


def gl_row(login: object = T0, logout: object = T0 + 3600, gym: object = 2) -> str:
    return f"aa:bb:cc:dd:ee:01,{gym},{login},{logout}"


BPM = {"device_id": 11, "time": T0 + 60.25, "heartrate": 99.5}
WORKOUT = {"user_id": 1, "workout_id": 2, "timestamp": T0, "action": "start", "session_id": 3}
USER_INFO = {"user_id": 1, "update_type": "new", "timestamp": T0, "dob": "03/06/1990", "first_name": "Ann",
             "last_name": "Lee", "address": {"street_address": "1 Main", "city": "Seattle", "state": "WA",
                                             "zip": 98101}}


def rec(topic: object = "bpm", payload: object = None, **outer: object) -> str:
    payload = BPM if payload is None else payload
    value = payload if isinstance(payload, str) else json.dumps(payload)
    return json.dumps({"key": "k", "value": value, "topic": topic, "partition": 0, "offset": 1,
                       "timestamp": T0 * 1000} | outer)


def km(*lines: str, end: str = "\n") -> bytes:
    return end.join(lines).encode() + end.encode()


def bpm(**changes: object) -> str:
    return rec("bpm", BPM | changes)


def symlink_to(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


@dataclass(frozen=True)
class Case:
    """One landing file (or entry), what it holds, and what bronze must make of it:
    ``valid`` bronze rows and quarantine ``reasons``; ``None`` for entries that are ignored."""

    kind: str
    source: str
    name: str
    data: bytes | Callable[[Path], None]
    valid: int | None
    reasons: dict[str, int]


def _corpus(outside: Path) -> list[Case]:
    good_ru, good_gl, good_km = ru(ru_row()), gl(gl_row()), km(bpm())
    return [
        # --- encodings, line endings, headers (registered_users) ---
        Case("crlf endings", RU, "ru_crlf.csv", ru(ru_row(1), ru_row(2), end="\r\n"), 2, {}),
        Case("old-Mac CR endings", RU, "ru_cr.csv", ru(ru_row(1), ru_row(2), ru_row(3), end="\r"), 3, {}),
        Case("mixed endings", RU, "ru_mixed.csv",
             f"{RU_HEADER}\r\n{ru_row(1)}\n{ru_row(2)}\r{ru_row(3)}".encode(), 3, {}),
        Case("no final newline", RU, "ru_nofinal.csv", ru(ru_row()).rstrip(b"\n"), 1, {}),
        Case("UTF-8 byte-order mark", RU, "ru_bom.csv", b"\xef\xbb\xbf" + ru(ru_row(), ru_row(2)), 2, {}),
        Case("UTF-16 with BOM", RU, "ru_utf16.csv", ru(ru_row()).decode().encode("utf-16"), 1, {}),
        Case("no header", RU, "ru_noheader.csv", f"{ru_row(1)}\n{ru_row(2)}\n".encode(), 0, {"malformed_csv": 2}),
        Case("header only", RU, "ru_headeronly.csv", ru(), 0, {}),
        Case("empty file", RU, "ru_empty.csv", b"", 0, {}),
        Case("blank and whitespace lines", RU, "ru_blank.csv",
             f"\n{RU_HEADER}\n\n{ru_row(1)}\n   \n\t\n{ru_row(2)}\n\n".encode(), 2, {}),
        Case("quoted reordered header", RU, "ru_quoted.csv",
             b'"mac_address","registration_timestamp","user_id","device_id"\naa:bb:cc:dd:ee:01,1678095123,1,11\n', 1, {}),
        Case("upper-case header", RU, "ru_upper.csv", ru(ru_row(), header=RU_HEADER.upper()), 1, {}),
        Case("header missing a column", RU, "ru_shortheader.csv",
             b"user_id,device_id,mac_address\n1,11,aa:bb:cc:dd:ee:01\n", 0,
             {"missing_field:registration_timestamp": 1}),
        Case("header repeated mid-file", RU, "ru_rehead.csv", ru(ru_row(), RU_HEADER), 1, {"wrong_type:user_id": 1}),
        Case("unreadable header line", RU, "ru_badheader.csv", b"caf\xe9 export\n" + ru(ru_row(1), ru_row(2)), 0,
             {"malformed_csv": 4}),
        Case("a column named twice", RU, "ru_twice.csv",
             b"user_id,user_id,device_id,mac_address,registration_timestamp\n1,2,11,aa:bb:cc:dd:ee:01,1678095123\n",
             0, {"malformed_csv": 2}),
        Case("extra column", RU, "ru_extra.csv", ru(ru_row() + ",zz"), 0, {"malformed_csv": 1}),
        Case("invalid UTF-8 line", RU, "ru_latin1.csv", ru(ru_row()) + b"2,12,aa:bb:cc:dd:ee:02,1\xe9\n",
             1, {"malformed_csv": 1}),
        Case("one huge line", RU, "ru_hugeline.csv", ru("x" * 2_000_000), 0, {"malformed_csv": 1}),
        Case("padded values, upper-case MAC", RU, "ru_padded.csv",
             ru(" 1 , 11 , AA:BB:CC:DD:EE:01 , 1678095123 "), 1, {}),
        # --- compression and binary ---
        Case("gzip named .csv", RU, "ru_gzip.csv", gzip.compress(ru(ru_row(1), ru_row(2))), 2, {}),
        Case("corrupt gzip", RU, "ru_badgzip.csv", gzip.compress(ru(ru_row()))[:20], 0,
             {"unreadable_file:corrupt_gzip": 1}),
        Case("bzip2", RU, "ru_bz2.csv", bz2.compress(ru(ru_row())), 0, {"unreadable_file:unsupported_compression": 1}),
        Case("binary", RU, "ru_binary.csv", bytes(range(256)) * 4, 0, {"unreadable_file:binary": 1}),
        # --- numeric extremes (registered_users) ---
        Case("registration NaN", RU, "ru_nan.csv", ru(ru_row(reg="NaN")), 0,
             {"invalid_value:registration_timestamp": 1}),
        Case("registration Infinity", RU, "ru_inf.csv", ru(ru_row(reg="Infinity"), ru_row(reg="-Infinity")), 0,
             {"invalid_value:registration_timestamp": 2}),
        Case("registration 1e300", RU, "ru_1e300.csv", ru(ru_row(reg="1e300")), 0,
             {"invalid_value:registration_timestamp": 1}),
        Case("registration 1e17 s", RU, "ru_1e17.csv", ru(ru_row(reg="1e17")), 0,
             {"invalid_value:registration_timestamp": 1}),
        Case("registration before 1900", RU, "ru_1800.csv", ru(ru_row(reg=-5_000_000_000)), 0,
             {"invalid_value:registration_timestamp": 1}),
        Case("registration at epoch 0 and negative", RU, "ru_epoch0.csv", ru(ru_row(1, 0), ru_row(2, -1)), 2, {}),
        Case("user_id above 2^31", RU, "ru_bigid.csv", ru(ru_row(uid=3_000_000_000)), 1, {}),
        Case("user_id above 2^63", RU, "ru_hugeid.csv", ru(ru_row(uid=2**64)), 0, {"wrong_type:user_id": 1}),
        # --- names ---
        Case("name with *", RU, "ru_star*.csv", good_ru, 1, {}),
        Case("name with [ ]", RU, "ru_[br].csv", good_ru, 1, {}),
        Case("name with :", RU, "ru_colon:1.csv", good_ru, 1, {}),
        Case("name with space and %", RU, "ru space 100%20.csv", good_ru, 1, {}),
        Case("name with { , } and ?", RU, "ru_{a,b}?.csv", good_ru, 1, {}),
        Case("name with quote and backslash", RU, "ru_o'q\\s.csv", good_ru, 1, {}),
        Case("name with non-ASCII", RU, "ru_ünï😀.csv", good_ru, 1, {}),
        Case("name of 250 bytes", RU, "ru_" + "n" * 243 + ".csv", good_ru, 1, {}),
        Case("symlink out of the landing zone", RU, "ru_link.csv", symlink_to(str(outside)), 0,
             {"unreadable_file:symlink": 1}),
        Case("dangling symlink", RU, "ru_dangling.csv", symlink_to("/nonexistent/x.csv"), 0,
             {"unreadable_file:symlink": 1}),
        Case("fifo", RU, "ru_fifo.csv", os.mkfifo, 0, {"unreadable_file:not_a_regular_file": 1}),
        Case("in-flight temporary", RU, "_inflight.csv", good_ru, None, {}),
        Case("hidden file", RU, ".hidden.csv", good_ru, None, {}),
        Case("sub-folder", RU, "ru_subdir", os.mkdir, None, {}),
        # --- gym_logins ---
        Case("login 1e17 s", GL, "gl_1e17.csv", gl(gl_row(login="1e17")), 0, {"invalid_value:login": 1}),
        Case("login NaN", GL, "gl_nan.csv", gl(gl_row(login="NaN")), 0, {"invalid_value:login": 1}),
        Case("logout Infinity", GL, "gl_inf.csv", gl(gl_row(logout="Infinity")), 0, {"invalid_value:logout": 1}),
        Case("logout 1e300", GL, "gl_1e300.csv", gl(gl_row(logout="1e300")), 0, {"invalid_value:logout": 1}),
        Case("empty logout", GL, "gl_inside.csv", gl(gl_row(logout="")), 1, {}),
        Case("gym not an integer", GL, "gl_gymfloat.csv", gl(gl_row(gym="1.5")), 0, {"wrong_type:gym": 1}),
        Case("gym above 2^63", GL, "gl_gymhuge.csv", gl(gl_row(gym=2**64)), 0, {"wrong_type:gym": 1}),
        Case("CR endings", GL, "gl_cr.csv", gl(gl_row(), gl_row(T0 + 1), end="\r"), 2, {}),
        Case("BOM and CRLF", GL, "gl_bom.csv", b"\xef\xbb\xbf" + gl(gl_row(), end="\r\n"), 1, {}),
        Case("tab-separated", GL, "gl_tsv.csv", b"mac_address\tgym\tlogin\tlogout\naa:bb:cc:dd:ee:01\t2\t1\t2\n", 0,
             {"malformed_csv": 2}),
        Case("no header", GL, "gl_noheader.csv", gl_row().encode() + b"\n", 0, {"malformed_csv": 1}),
        Case("gzip", GL, "gl_gzip.csv", gzip.compress(gl(gl_row(), gl_row(T0 + 1))), 2, {}),
        Case("name with *", GL, "gl_*.csv", good_gl, 1, {}),
        # --- kafka_multiplex: outer record ---
        Case("Kafka timestamp 1e16 ms", KM, "km_ts1e16.json", km(rec(timestamp=10**16)), 0,
             {"invalid_value:timestamp": 1}),
        Case("Kafka timestamp NaN", KM, "km_tsnan.json", km(rec(timestamp="NaN")), 0, {"invalid_value:timestamp": 1}),
        Case("Kafka timestamp -1e15", KM, "km_tsneg.json", km(rec(timestamp=-(10**15))), 0,
             {"invalid_value:timestamp": 1}),
        Case("Kafka timestamp in seconds", KM, "km_tssec.json", km(rec(timestamp=T0)), 1, {}),
        Case("Kafka timestamp text", KM, "km_tstext.json", km(rec(timestamp="yesterday")), 0,
             {"wrong_type:timestamp": 1}),
        Case("unknown topic", KM, "km_topic.json", km(rec("nope")), 0, {"invalid_value:topic": 1}),
        Case("numeric topic", KM, "km_topicnum.json", km(rec(1)), 0, {"invalid_value:topic": 1}),
        Case("null topic", KM, "km_topicnull.json", km(rec(None)), 0, {"missing_field:topic": 1}),
        Case("partition as text", KM, "km_parttext.json", km(rec(partition="2")), 1, {}),
        Case("partition 1.5", KM, "km_partfloat.json", km(rec(partition=1.5)), 0, {"wrong_type:partition": 1}),
        Case("offset 1e30", KM, "km_offhuge.json", km(rec(offset=10**30)), 0, {"wrong_type:offset": 1}),
        Case("truncated JSON", KM, "km_trunc.json", km(rec()[:40]), 0, {"malformed_json": 1}),
        Case("top-level array", KM, "km_array.json", km("[" + rec() + "]"), 0, {"malformed_json": 1}),
        Case("not JSON at all", KM, "km_text.json", km("hello world"), 0, {"malformed_json": 1}),
        Case("value missing", KM, "km_novalue.json", km(json.dumps({"topic": "bpm", "partition": 0, "offset": 1,
                                                                        "timestamp": T0 * 1000})), 0,
             {"missing_field:value": 1}),
        # --- kafka_multiplex: payloads and nested types ---
        Case("payload not JSON", KM, "km_badpayload.json", km(rec("bpm", "not json")), 0, {"malformed_payload": 1}),
        Case("payload is an array", KM, "km_payloadarray.json", km(rec("bpm", "[1, 2]")), 0,
             {"malformed_payload": 1}),
        Case("value as a nested object", KM, "km_nestedvalue.json",
             km(json.dumps({"key": "k", "value": BPM, "topic": "bpm", "partition": 0, "offset": 1,
                            "timestamp": T0 * 1000})), 1, {}),
        Case("empty payload", KM, "km_emptypayload.json", km(rec("bpm", {})), 0, {"missing_field:device_id": 1}),
        Case("payload time 1e17 s", KM, "km_time1e17.json", km(bpm(time=1e17)), 0, {"invalid_value:time": 1}),
        Case("payload time NaN text", KM, "km_timenan.json", km(bpm(time="NaN")), 0, {"invalid_value:time": 1}),
        Case("payload ISO time", KM, "km_timeiso.json", km(bpm(time="2023-03-06T10:15:02.5Z")), 1, {}),
        Case("heart rate Infinity", KM, "km_hrinf.json", km(bpm(heartrate="Infinity")), 0,
             {"invalid_value:heartrate": 1}),
        Case("heart rate 1e300", KM, "km_hr1e300.json", km(bpm(heartrate=1e300)), 0, {"invalid_value:heartrate": 1}),
        Case("heart rate NaN text", KM, "km_hrnan.json", km(bpm(heartrate="NaN")), 0, {"invalid_value:heartrate": 1}),
        Case("heart rate as array", KM, "km_hrarray.json", km(bpm(heartrate=[1])), 0, {"wrong_type:heartrate": 1}),
        Case("heart rate null, out of range, zero", KM, "km_hredge.json",
             km(bpm(heartrate=None), bpm(heartrate=400), bpm(heartrate=0), bpm(heartrate=-5)), 4, {}),
        Case("workout user_id above 2^31", KM, "km_wbigid.json", km(rec("workout", WORKOUT | {"user_id": 3_000_000_000})),
             1, {}),
        Case("workout user_id above 2^63", KM, "km_whugeid.json", km(rec("workout", WORKOUT | {"user_id": 2**64})), 0,
             {"wrong_type:user_id": 1}),
        Case("workout user_id as object", KM, "km_wobjid.json", km(rec("workout", WORKOUT | {"user_id": {"a": 1}})), 0,
             {"wrong_type:user_id": 1}),
        Case("workout timestamp 1e17", KM, "km_wts.json", km(rec("workout", WORKOUT | {"timestamp": 1e17})), 0,
             {"invalid_value:timestamp": 1}),
        Case("profile timestamp 1e300", KM, "km_pts.json", km(rec("user_info", USER_INFO | {"timestamp": 1e300})), 0,
             {"invalid_value:timestamp": 1}),
        Case("profile dob garbage", KM, "km_pdob.json", km(rec("user_info", USER_INFO | {"dob": "13/45/1990"})), 0,
             {"invalid_value:dob": 1}),
        Case("profile dob in year 0000", KM, "km_pdob0.json", km(rec("user_info", USER_INFO | {"dob": "01/01/0000"})),
             0, {"invalid_value:dob": 1}),
        Case("profile address as text", KM, "km_paddr.json", km(rec("user_info", USER_INFO | {"address": "x"})), 1, {}),
        Case("profile non-ASCII names", KM, "km_pnames.json",
             km(rec("user_info", USER_INFO | {"first_name": "Zoë", "last_name": "Øster 😀"})), 1, {}),
        # --- kafka_multiplex: encodings, endings, compression ---
        Case("CR endings", KM, "km_cr.json", km(bpm(), bpm(time=T0 + 1), bpm(time=T0 + 2), end="\r"), 3, {}),
        Case("BOM", KM, "km_bom.json", b"\xef\xbb\xbf" + km(bpm()), 1, {}),
        Case("UTF-16", KM, "km_utf16.json", km(bpm()).decode().encode("utf-16"), 1, {}),
        Case("invalid UTF-8 line", KM, "km_latin1.json", km(bpm()) + b'{"key": "\xe9"}\n', 1, {"malformed_json": 1}),
        Case("gzip", KM, "km_gzip.json", gzip.compress(km(bpm(), rec("workout", WORKOUT))), 2, {}),
        Case("name with [ ] and *", KM, "km_[0]*.json", good_km, 1, {}),
    ]


VALID_FILES = {RU: ("zz_valid.csv", ru(ru_row(7), ru_row(8))), GL: ("zz_valid.csv", gl(gl_row(), gl_row(T0 + 9))),
               KM: ("zz_valid.json", km(bpm(), rec("workout", WORKOUT), rec("user_info", USER_INFO)))}


def _land(landing: Path, cases: list[Case]) -> None:
    for source in TABLES:
        (landing / source).mkdir(parents=True, exist_ok=True)
        name, data = VALID_FILES[source]
        (landing / source / name).write_bytes(data)
    for case in cases:
        path = landing / case.source / case.name
        if callable(case.data):
            case.data(path)
        else:
            path.write_bytes(case.data)


def _per_file(store, spec) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for r in store.read(spec).select("source_file", *(["reason"] if "reason" in spec.column_names else [])).collect():
        out.setdefault(r["source_file"], Counter())[r.asDict().get("reason")] += 1
    return out


def test_corpus_every_bad_input_is_accounted_for_and_a_rerun_changes_nothing(settings, store, run, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\nsecret line\n")
    cases = _corpus(outside)
    assert len({c.kind + c.source for c in cases}) >= 50
    _land(Path(settings.landing_root), cases)

    report = run(*BRONZE_SELECTION)
    assert not [c for c in report.checks if c.severity == "ERROR" and not c.passed]
    for source, (bronze, quarantine) in TABLES.items():
        rows, rejected = _per_file(store, bronze), _per_file(store, quarantine)
        valid_name, valid_data = VALID_FILES[source]
        assert sum(rows[f"{source}/{valid_name}"].values()) == valid_data.count(b"\n") - (source != KM)
        for case in (c for c in cases if c.source == source):
            key = f"{source}/{case.name}"
            if case.valid is None:
                assert key not in rows and key not in rejected, case.kind
                continue
            got = (sum(rows.get(key, Counter()).values()), dict(rejected.get(key, Counter())))
            assert got == (case.valid, case.reasons), case.kind
        assert not (set(rows) | set(rejected)) - {f"{source}/{c.name}" for c in cases} - {f"{source}/{valid_name}"}
    raws = [r["raw"] or "" for r in store.read(REGISTERED_USERS_QR).collect()]
    assert not any("secret" in raw or "root:" in raw for raw in raws)  # the symlink was not followed

    before = versions(store)
    again = run(*BRONZE_SELECTION)
    assert versions(store) == before
    assert not [c for c in again.checks if c.severity == "ERROR" and not c.passed]


# --- one test per bug, on `ingest` directly (no Dagster run: seconds each) ---------------------


def _ingest(store, spark, landing: Path, source: str = RU, parse=None):
    bronze, quarantine = TABLES[source]
    return ingest(store, spark, str(landing), source, bronze, quarantine, parse or parsers.parse_registered_users)


def _rows_by_file(store, spec) -> Counter:
    return Counter(r["source_file"] for r in store.read(spec).select("source_file").collect())


def test_landing_names_are_data_not_glob_patterns(store, spark, tmp_path):
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    names = ["a.csv", "b*.csv", "c[1].csv", "d]x.csv", "e:f.csv", "g h 5%20.csv", "i?.csv", "j{k,l}.csv"]
    for n, name in enumerate(names):
        (landing / RU / name).write_bytes(ru(ru_row(n), ru_row(n + 100)))
    report = _ingest(store, spark, landing)
    assert _rows_by_file(store, REGISTERED_USERS_BZ) == {f"{RU}/{name}": 2 for name in names}
    assert set(report.files) == {f"{RU}/{name}" for name in names}
    version = store.version(REGISTERED_USERS_BZ)
    _ingest(store, spark, landing)
    assert store.version(REGISTERED_USERS_BZ) == version


def test_line_endings_headers_bom_and_gzip_lose_no_row(either_store, spark, tmp_path):
    store = either_store
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    (landing / RU / "cr.csv").write_bytes(ru(ru_row(1), ru_row(2), end="\r"))
    (landing / RU / "noheader.csv").write_bytes(f"{ru_row(3)}\n{ru_row(4)}\n".encode())
    (landing / RU / "gzip.csv").write_bytes(gzip.compress(ru(ru_row(5))))
    (landing / RU / "bom.csv").write_bytes(b"\xef\xbb\xbf" + ru(ru_row(6)))
    _ingest(store, spark, landing)
    assert _rows_by_file(store, REGISTERED_USERS_BZ) == {f"{RU}/cr.csv": 2, f"{RU}/gzip.csv": 1, f"{RU}/bom.csv": 1}
    quarantined = {(r["source_file"], r["line"]): r["reason"] for r in store.read(REGISTERED_USERS_QR).collect()}
    assert quarantined == {(f"{RU}/noheader.csv", 1): "malformed_csv", (f"{RU}/noheader.csv", 2): "malformed_csv"}
    assert reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)[0]
    assert reason_counts(store, REGISTERED_USERS_QR) == {"malformed_csv": 2}
    assert reason_counts(store, REGISTERED_USERS_QR, [f"{RU}/cr.csv"]) == {}


def test_reconciliation_counts_lines_itself_and_catches_a_lossy_parser(either_store, spark, tmp_path):
    store = either_store
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    (landing / RU / "a.csv").write_bytes(ru(ru_row(1), ru_row(2), ru_row(3)))

    def lossy(lines):
        return parsers.parse_registered_users(lines.where("line != 3"))

    _ingest(store, spark, landing, parse=lossy)
    passed, metadata = reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)
    assert not passed and metadata["mismatched_files"] == 1


def test_reconciliation_after_a_pass_verifies_touched_files_only_and_still_catches_each_change(either_store, spark,
                                                                                               tmp_path):
    """Given the versions of a passing reconciliation, only files named by a commit since then
    or changed on disk since their ingestion are verified again; a commit that does not name
    its files (a hand-made DELETE) makes every file verified again."""
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    store = either_store
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    (landing / RU / "a.csv").write_bytes(ru(ru_row(1), ru_row(2), ru_row(3)))
    (landing / RU / "b.csv").write_bytes(ru(ru_row(4), ru_row(5)))
    _ingest(store, spark, landing)

    def check(since):
        return reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR, since)

    passed, whole = check(None)
    assert passed and whole["verified_again"] == "every file"
    since = {s.qualified_name: store.version(s) for s in (REGISTERED_USERS_BZ, REGISTERED_USERS_QR)}
    passed, nothing = check(since)
    assert passed and nothing["verified_again"].startswith("0 files") and nothing["files"] == 2
    (landing / RU / "c.csv").write_bytes(ru(ru_row(6), "not,a,row"))
    _ingest(store, spark, landing)
    passed, one = check(since)
    assert passed and one["verified_again"].startswith("1 files") and one["files_by_verification"].value == {"counted": 1}
    assert one["bronze_rows"] == 6 and one["quarantined_rows"] == 1

    since = {s.qualified_name: store.version(s) for s in (REGISTERED_USERS_BZ, REGISTERED_USERS_QR)}
    with (landing / RU / "a.csv").open("ab") as f:  # changed on disk, not ingested again yet
        f.write(ru_row(7).encode() + b"\n")
    passed, changed = check(since)
    assert not passed and changed["mismatched_files"] == 1 and changed["files_by_verification"].value == {"changed": 1}
    assert not check(None)[0]
    (landing / RU / "a.csv").write_bytes(ru(ru_row(1), ru_row(2), ru_row(3)))
    os.utime(landing / RU / "a.csv", ns=(ingested_landing(store, REGISTERED_USERS_BZ)[f"{RU}/a.csv"]["mtime_ns"],) * 2)
    assert check(since)[0]

    ghost = store.read(REGISTERED_USERS_BZ).limit(1).withColumn("source_file", F.lit(f"{RU}/ghost.csv"))
    store.append(REGISTERED_USERS_BZ, ghost, metadata={"files": {f"{RU}/b.csv": 2}})  # a row no commit recorded
    passed, unrecorded = check(since)
    assert not passed and unrecorded["rows_from_unrecorded_files"] == 1 and not unrecorded["mismatched_files"]
    assert not check(None)[0]

    DeltaTable(store.location(REGISTERED_USERS_BZ)).delete("user_id = 4")  # a row of b.csv lost, no files named
    passed, lost = check(since)
    assert not passed and lost["verified_again"] == "every file" and lost["mismatched_files"] == 1


def test_kafka_partitions_are_reconciled_against_their_recorded_counts(either_store, spark, tmp_path):
    store = either_store
    landing = tmp_path / "landing"
    (landing / KM).mkdir(parents=True)
    (landing / KM / "a.json").write_bytes(km(bpm(), rec("nope")))
    ingest(store, spark, str(landing), KM, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
           lambda lines: parsers.parse_kafka_multiplex(lines, spark.createDataFrame([], "date date, week_part string")))
    assert reconcile(store, str(landing), KM, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR)[0]
    import pyarrow as pa

    row = store.read(KAFKA_MULTIPLEX_BZ).limit(1).toArrow()
    kafka_row = row.set_column(row.column_names.index("source_file"), "source_file", pa.array(["kafka://bpm/0"]))
    store.append(KAFKA_MULTIPLEX_BZ, kafka_row, metadata={"files": {"kafka://bpm/0": 1}})
    assert reconcile(store, str(landing), KM, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR)[0]
    store.append(KAFKA_MULTIPLEX_BZ, kafka_row, metadata={"files": {"kafka://bpm/0": 3}})
    assert not reconcile(store, str(landing), KM, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR)[0]
    assert "kafka://bpm/0" in ingested_files(store, KAFKA_MULTIPLEX_BZ)


def test_a_symlink_is_quarantined_never_followed(either_store, spark, tmp_path):
    store = either_store
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    secret = tmp_path / "secret.csv"
    secret.write_bytes(ru(ru_row(1)))
    os.symlink(secret, landing / RU / "link.csv")
    (landing / RU / "ok.csv").write_bytes(ru(ru_row(2)))
    _ingest(store, spark, landing)
    assert _rows_by_file(store, REGISTERED_USERS_BZ) == {f"{RU}/ok.csv": 1}
    (row,) = store.read(REGISTERED_USERS_QR).collect()
    assert (row["source_file"], row["line"], row["raw"], row["reason"]) == (
        f"{RU}/link.csv", 0, None, "unreadable_file:symlink")
    assert reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)[0]


def test_a_name_that_is_not_utf8_is_its_own_file_and_is_reconciled_from_its_bytes(either_store, spark, tmp_path):
    """``a<0xE9>.csv`` (Latin-1) and a file literally named ``a\\xe9.csv`` are two files: two
    names, each row once, and the reconciliation reads the first through its real bytes (a
    change to it after ingestion is seen)."""
    store = either_store
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    latin = os.path.join(os.fsencode(landing / RU), b"a\xe9.csv")
    with open(latin, "wb") as f:
        f.write(ru(ru_row(3)))
    (landing / RU / "a\\xe9.csv").write_bytes(ru(ru_row(4)))
    _ingest(store, spark, landing)
    assert _rows_by_file(store, REGISTERED_USERS_BZ) == {f"{RU}/a\\xe9.csv/(name not UTF-8)": 1, f"{RU}/a\\xe9.csv": 1}
    assert sorted(r["user_id"] for r in store.read(REGISTERED_USERS_BZ).collect()) == [3, 4]
    passed, detail = reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)
    assert passed and detail["files_by_verification"].value == {"counted": 2}
    with open(latin, "ab") as f:
        f.write(ru_row(5).encode() + b"\n")
    assert not reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)[0]
    assert _ingest(store, spark, landing).changed_files == [f"{RU}/a\\xe9.csv/(name not UTF-8)"]


def test_a_file_changed_after_ingestion_is_reported_not_ignored_or_doubled(either_store, spark, tmp_path):
    store = either_store
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    path = landing / RU / "a.csv"
    path.write_bytes(ru(ru_row(1)))
    _ingest(store, spark, landing)
    with path.open("ab") as f:
        f.write(ru_row(2).encode() + b"\n")
    assert not reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)[0]
    report = _ingest(store, spark, landing)
    assert report.changed_files == [f"{RU}/a.csv"]
    assert store.row_count(REGISTERED_USERS_BZ) == 1
    notices = [r for r in store.read(REGISTERED_USERS_QR).collect() if r["reason"] == "changed_file"]
    assert [(n["source_file"], n["line"], json.loads(n["raw"])["size"]) for n in notices] == [
        (f"{RU}/a.csv", -1, path.stat().st_size)]
    assert reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)[0]
    version = store.version(REGISTERED_USERS_QR)
    _ingest(store, spark, landing)
    assert store.version(REGISTERED_USERS_QR) == version  # reported once per content
    # The notice is no rejected line: the share of rejected lines stays 0 of 1.
    from fitness_assets.assets.bronze.checks import quarantine_volume_check
    from fitness_assets.assets.checks_lib import evaluate_checks
    from fitness_assets.resources import LakehouseResource, SparkResource

    volume = evaluate_checks(store, LakehouseResource(spark=SparkResource(), root=str(tmp_path), landing_root=str(landing)),
                             [quarantine_volume_check(REGISTERED_USERS_BZ, REGISTERED_USERS_QR)])["quarantine_volume"]
    assert (volume.metadata["lines"].value, volume.metadata["quarantined"].value) == (1, 0) and volume.passed


def test_an_entry_swapped_for_or_from_a_symlink_after_ingestion_is_reported(either_store, spark, tmp_path):
    """An ingested file replaced by a symlink, and a refused symlink replaced by a regular file,
    are changes like any other: one ``changed_file`` notice each (the second file's content was
    never ingested and is not silently left out), and the reconciliation passes again once
    they are reported (it had failed on the first, blocking silver for good)."""
    store = either_store
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    (landing / RU / "was_file.csv").write_bytes(ru(ru_row(1)))
    os.symlink(tmp_path / "elsewhere.csv", landing / RU / "was_link.csv")
    _ingest(store, spark, landing)
    (landing / RU / "was_file.csv").unlink()
    os.symlink(tmp_path / "elsewhere.csv", landing / RU / "was_file.csv")
    (landing / RU / "was_link.csv").unlink()
    (landing / RU / "was_link.csv").write_bytes(ru(ru_row(2)))
    assert not reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)[0]
    assert _ingest(store, spark, landing).changed_files == [f"{RU}/was_file.csv", f"{RU}/was_link.csv"]
    notices = {r["source_file"]: json.loads(r["raw"]) for r in store.read(REGISTERED_USERS_QR).collect()
               if r["reason"] == "changed_file"}
    assert notices[f"{RU}/was_file.csv"] == {"refused": "symlink"} and "sha256" in notices[f"{RU}/was_link.csv"]
    assert store.row_count(REGISTERED_USERS_BZ) == 1  # files are immutable: reported, not ingested again
    assert reconcile(store, str(landing), RU, REGISTERED_USERS_BZ, REGISTERED_USERS_QR)[0]
    version = store.version(REGISTERED_USERS_QR)
    _ingest(store, spark, landing)
    assert store.version(REGISTERED_USERS_QR) == version  # reported once


def test_a_missing_landing_root_fails_fast_with_one_clear_line(store, spark, tmp_path):
    with pytest.raises(IngestConfigError) as raised:
        _ingest(store, spark, tmp_path / "nowhere")
    message = str(raised.value)
    assert "\n" not in message and "FITNESS_LANDING_ROOT" in message and "nowhere" in message
    assert not store.exists(REGISTERED_USERS_BZ)


def test_a_missing_landing_root_fails_the_cli_before_spark_and_a_dagster_run_in_its_step(settings, dagster_instance,
                                                                                         spark):
    from dagster import AssetKey

    from fitness_assets.cli import run_graph
    from fitness_assets.definitions import ALL_ASSETS_JOB, build_definitions
    from fitness_assets_tests.conftest import TEST_SPARK

    with pytest.raises(IngestConfigError, match="FITNESS_LANDING_ROOT"):
        run_graph(list(BRONZE_SELECTION), settings, TEST_SPARK, instance=dagster_instance)
    # A run Dagster launches (UI, sensor, automation) fails its ingestion step with the same line.
    job = build_definitions(settings, TEST_SPARK).resolve_job_def(ALL_ASSETS_JOB)
    keys = [AssetKey(["bronze", "registered_users_bz"]), AssetKey(["quarantine", "registered_users_bz"])]
    result = job.execute_in_process(instance=dagster_instance, asset_selection=keys, raise_on_error=False)
    failures = [e for e in result.all_events if e.is_step_failure]
    assert not result.success and failures
    assert "FITNESS_LANDING_ROOT" in failures[0].step_failure_data.error.to_string()


def test_an_unwritable_lakehouse_fails_fast_with_one_clear_line(spark, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    store = DeltaRsTableStore(str(blocker / "lakehouse"), lambda: spark)
    with pytest.raises(LakehouseNotWritable) as raised:
        store.check_writable()
    assert "\n" not in str(raised.value) and "FITNESS_LAKEHOUSE_ROOT" in str(raised.value)
    (tmp_path / "landing" / RU).mkdir(parents=True)
    with pytest.raises(LakehouseNotWritable):
        _ingest(store, spark, tmp_path / "landing")
    DeltaRsTableStore(str(tmp_path / "lake"), lambda: spark).check_writable()


def test_poison_values_never_crash_silver_or_gold(settings, store, run):
    from fitness_assets.tables import GYM_LOGS, GYM_SUMMARY, WORKOUT_BPM_SUMMARY

    big = 3_000_000_000
    landing = Path(settings.landing_root)
    for source in TABLES:
        (landing / source).mkdir(parents=True)
    (landing / RU / "r.csv").write_bytes(ru(ru_row(big, 1678000000), ru_row(5, "NaN", 12, "aa:bb:cc:dd:ee:02"),
                                            ru_row(6, "1e300", 13, "aa:bb:cc:dd:ee:03")))
    (landing / GL / "g.csv").write_bytes(gl(gl_row(1678100000, 1678110000), gl_row("1e17", ""),
                                            # less than a microsecond apart: one visit, the later logout
                                            gl_row(1678200000, 1678201000), gl_row("1678200000.0000002", 1678202000)))
    workout = WORKOUT | {"user_id": big, "workout_id": 1, "session_id": 1}
    (landing / KM / "k.json").write_bytes(km(
        rec("user_info", USER_INFO | {"user_id": big}),
        rec("workout", workout | {"timestamp": 1678100100}),
        rec("workout", workout | {"timestamp": 1678103000, "action": "stop"}),
        bpm(time=1678100200, heartrate=80), bpm(time=1678100300, heartrate=100),
        bpm(time=1678100400, heartrate="Infinity"), bpm(time=1678100500, heartrate=1e300),
        bpm(time=1678100600, heartrate="NaN"), bpm(time=1e17), rec(timestamp=10**16),
        rec("user_info", USER_INFO | {"user_id": 77}),
        rec("user_info", USER_INFO | {"user_id": 77, "update_type": "merge", "timestamp": T0 + 5}),
        rec("user_info", {"user_id": 77, "update_type": "delete", "timestamp": T0 + 10}),
        rec("user_info", USER_INFO | {"user_id": 78, "dob": "01/01/0000"}),  # Spark reads year 0; Python cannot
    ))
    report = run()
    assert not [c for c in report.checks if c.severity == "ERROR" and not c.passed]
    (summary,) = store.read(WORKOUT_BPM_SUMMARY).collect()
    assert (summary["user_id"], summary["num_recordings"], summary["avg_bpm"]) == (big, 2, 90.0)
    assert store.row_count(GYM_SUMMARY) == 1
    visits = sorted((r["login"], r["logout"]) for r in store.read(GYM_LOGS).collect())
    assert [(str(a), str(b)) for a, b in visits] == [("2023-03-06 10:53:20", "2023-03-06 13:40:00"),
                                                     ("2023-03-07 14:40:00", "2023-03-07 15:13:20")]
    assert report.quarantine_reasons["quarantine.kafka_multiplex_bz"] == {
        "invalid_value:heartrate": 3, "invalid_value:time": 1, "invalid_value:timestamp": 1,
        "invalid_value:update_type": 1, "invalid_value:dob": 1}
    # erasure: the deleted member's names, address and birth date are gone from silver and quarantine
    from fitness_assets.tables import USER_PROFILE, USER_PROFILE_HISTORY

    history = store.read(USER_PROFILE_HISTORY).where("user_id = 77").collect()
    assert len(history) == 2 and all(r["first_name"] is None and r["dob"] is None for r in history)
    assert store.read(USER_PROFILE).where("user_id = 77").count() == 0
    (erased,) = store.read(KAFKA_MULTIPLEX_QR).where("reason = 'invalid_value:update_type'").collect()
    assert erased["raw"] is None
    assert store.read(USER_PROFILE_HISTORY).where(f"user_id = {big}").first()["first_name"] == "Ann"


def test_check_samples_leave_personal_data_out(settings, store, spark):
    import datetime as dt

    import pyarrow as pa

    from fitness_assets.assets.checks_lib import evaluate_checks, rule_check
    from fitness_assets.resources import LakehouseResource, SparkResource
    from fitness_assets.tables import USER_PROFILE_HISTORY

    when = dt.datetime(2023, 3, 6, tzinfo=dt.UTC)
    row = {"user_id": 1, "dob": dt.date(1990, 3, 6), "sex": "F", "gender": "F", "first_name": "Ann",
           "last_name": "Lee", "street_address": "1 Main St", "city": "Seattle", "state": "WA", "zip": 98101,
           "updated": when, "valid_from": when, "valid_to": None, "is_current": True, "is_deleted": False}
    store.append(USER_PROFILE_HISTORY, pa.Table.from_pylist([row], schema=USER_PROFILE_HISTORY.schema))
    check = rule_check(USER_PROFILE_HISTORY, "every_row_offends", "true", "Flags every row.")
    result = evaluate_checks(store, LakehouseResource(spark=SparkResource(), root=settings.lakehouse_root, landing_root=settings.landing_root),
                             [check])["every_row_offends"]
    assert not result.passed
    sample = json.dumps(result.metadata["sample"].value)
    assert '"user_id": 1' in sample
    for secret in ("Ann", "Lee", "1 Main St", "1990", "Seattle", "98101"):
        assert secret not in sample


def test_a_name_not_utf8_ingested_under_its_earlier_name_is_not_ingested_again(store, spark, tmp_path, monkeypatch):
    """Lakehouses written before names were one to one recorded such a file under its escapes
    alone: after the upgrade it is the same file, not a new one (its rows are not doubled)."""
    from fitness_assets.pipelines import bronze as bronze_pipeline

    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    with open(os.path.join(os.fsencode(landing / RU), b"a\xe9.csv"), "wb") as f:
        f.write(ru(ru_row(3)))
    with monkeypatch.context() as earlier:
        earlier.setattr(bronze_pipeline, "_display_name",
                        lambda name: name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        _ingest(store, spark, landing)
    assert _rows_by_file(store, REGISTERED_USERS_BZ) == {f"{RU}/a\\xe9.csv": 1}
    version = store.version(REGISTERED_USERS_BZ)
    assert _ingest(store, spark, landing).files == {}
    assert store.version(REGISTERED_USERS_BZ) == version


def test_a_name_not_utf8_arriving_after_a_file_named_with_its_escapes_is_ingested(store, spark, tmp_path):
    """A file literally named ``a\\xe9.csv`` ingested first made ``a<0xE9>.csv``, arriving later,
    look ingested under its legacy name: skipped for good, and the reconciliation (which looks
    at recorded files) never said so. The legacy name now counts only for the file recorded
    under it."""
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    (landing / RU / "a\\xe9.csv").write_bytes(ru(ru_row(4)))
    _ingest(store, spark, landing)
    with open(os.path.join(os.fsencode(landing / RU), b"a\xe9.csv"), "wb") as f:
        f.write(ru(ru_row(3)))
    _ingest(store, spark, landing)
    assert _rows_by_file(store, REGISTERED_USERS_BZ) == {f"{RU}/a\\xe9.csv": 1, f"{RU}/a\\xe9.csv/(name not UTF-8)": 1}
    assert sorted(r["user_id"] for r in store.read(REGISTERED_USERS_BZ).collect()) == [3, 4]


def test_a_run_overtaken_between_its_look_and_its_commit_ingests_nothing_twice(store, spark, tmp_path, monkeypatch):
    """Another run (a CLI run beside the daemon's) takes the files in after this run read what
    bronze holds: this run's commit is skipped, not a second copy of them."""
    import fitness_assets.pipelines.bronze as bronze_module

    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    (landing / RU / "a.csv").write_bytes(ru(ru_row(1), ru_row(2)))
    (landing / RU / "b.csv").write_bytes(ru(ru_row(3)))
    real_list, calls, other = bronze_module.list_landing, [], []

    def list_then_overtaken(root, source):
        calls.append(source)
        if len(calls) == 2:  # this run's loop has read what bronze holds: the other run commits now
            other.append(_ingest(store, spark, landing))
        return real_list(root, source)

    monkeypatch.setattr(bronze_module, "list_landing", list_then_overtaken)
    report = _ingest(store, spark, landing)
    assert set(other[0].files) == {f"{RU}/a.csv", f"{RU}/b.csv"} and not report.files and report.skipped_batches == 1
    assert _rows_by_file(store, REGISTERED_USERS_BZ) == {f"{RU}/a.csv": 2, f"{RU}/b.csv": 1}


def test_a_file_moved_away_between_the_folders_read_and_its_stat_is_not_listed(tmp_path, monkeypatch):
    """An archiver that moves a file right after the folder was read: the listing leaves it out
    (as if it had moved a moment earlier) instead of failing the sensor tick or the bronze run."""
    from fitness_assets.pipelines.bronze import list_landing

    (tmp_path / RU).mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / RU / name).write_bytes(ru(ru_row(1)))
    real_scandir = os.scandir

    def read_then_archived(path):
        entries = list(real_scandir(path))
        os.remove(os.path.join(path, "a.csv"))
        return iter(entries)

    monkeypatch.setattr(os, "scandir", read_then_archived)
    assert [f.relative for f in list_landing(str(tmp_path), RU)] == [f"{RU}/b.csv"]


def test_an_empty_landing_folder_costs_no_read_of_bronzes_history(store, spark, tmp_path, monkeypatch):
    """The multiplex's landing folder stays empty when its records come from Kafka, whose
    commits pile up in bronze's log (thousands a day): a run with no file reads none of them."""
    landing = tmp_path / "landing"
    (landing / RU).mkdir(parents=True)
    (landing / RU / "a.csv").write_bytes(ru(ru_row(1)))
    _ingest(store, spark, landing)
    (landing / RU / "a.csv").unlink()
    monkeypatch.setattr(type(store), "commit_metadata", lambda *_: pytest.fail("read bronze's whole history"))
    report = _ingest(store, spark, landing)
    assert not report.files and report.version == store.version(REGISTERED_USERS_BZ)
