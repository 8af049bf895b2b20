"""Tests of the tamper-evident audit log: format, validation, tampering, concurrency, CLI.

Every tamper case edits a real log written by ``AuditLog`` and checks that ``verify()`` names
the damage (kind, line and seq), not merely that it notices something.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import stat
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenticraft.sandbox.profile import PACKAGE_ROOT
from agenticraft.security import audit
from agenticraft.security.audit import (
    EVENT_TYPES,
    GENESIS,
    REQUIRED_FIELDS,
    AuditLog,
    Problem,
    VerifyReport,
    main,
)
from agenticraft.wire.errors import ConfigurationError, SecurityException

TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


# -- helpers ------------------------------------------------------------------------------------

def canon(obj: object) -> bytes:
    """Canonical JSON as the spec defines it, computed independently of the module."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def self_hash(rec: dict) -> str:
    return hashlib.sha256(canon({k: v for k, v in rec.items() if k != "hash"})).hexdigest()


def forge(rec: dict) -> bytes:
    """A line with a self-consistent hash, as a forger who knows the format would write it."""
    rec = dict(rec)
    rec["hash"] = self_hash(rec)
    return canon(rec) + b"\n"


def event(i: int) -> dict:
    return {"type": "session", "user_id": ("alice", "bob")[i % 2], "action": f"step-{i}"}


def write_log(path: Path, n: int = 10) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.record(event(i))
    return log


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def put_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def only_problem(report: VerifyReport) -> Problem:
    assert not report.ok, str(report)
    assert len(report.problems) == 1, str(report)
    return report.problems[0]


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return write_log(tmp_path / "audit.jsonl", 10)


# -- format -------------------------------------------------------------------------------------

def test_records_are_chained_canonical_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    returned = [log.record(event(i)) for i in range(3)]
    lines = lines_of(log.path)
    assert len(lines) == 3
    prev = GENESIS
    for seq, (line, rec) in enumerate(zip(lines, returned, strict=True), start=1):
        on_disk = json.loads(line)
        assert on_disk == rec
        assert line == canon(on_disk) + b"\n"
        assert rec["seq"] == seq
        assert rec["prev"] == prev
        assert rec["hash"] == self_hash(rec)
        assert TS_FORMAT.match(rec["ts"]), rec["ts"]
        assert rec["type"] == "session" and rec["action"] == f"step-{seq - 1}"
        prev = rec["hash"]
    assert json.loads(log.head_path.read_text()) == {"seq": 3, "hash": prev}
    assert log.verify().ok


def test_creates_private_parents_and_files(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "audit.jsonl"
    log = AuditLog(path)
    assert not (tmp_path / "a").exists()  # nothing happens until the first record
    log.record(event(0))
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.head_path.stat().st_mode) == 0o600


def test_line_is_one_unbuffered_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = write_log(tmp_path / "audit.jsonl", 2)
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(audit.os, "write", spy)
    log.record(event(2))
    last_line = lines_of(log.path)[-1]
    assert writes.count(last_line) == 1  # the whole line in a single os.write


def test_fsync_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(audit.os, "fsync", synced.append)
    AuditLog(tmp_path / "a.jsonl").record(event(0))
    assert synced == []
    AuditLog(tmp_path / "b.jsonl", fsync=True).record(event(0))
    assert len(synced) >= 2  # the log line and the head


def test_record_reads_only_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_CHUNK", 64)
    log = write_log(tmp_path / "audit.jsonl", 60)
    assert log.path.stat().st_size > 20 * 64
    read: list[int] = []
    real_pread = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        read.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(audit.os, "pread", spy)
    rec = log.record(event(60))
    assert rec["seq"] == 61
    assert sum(read) <= 1 + 5 * 64  # last byte + the chunks holding the last line
    assert log.verify().ok


def test_backward_scan_across_chunk_boundaries(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_CHUNK", 7)
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        log.record({**event(i), "blob": "x" * (i * 37), "text": "ünïcödé ✓"})
    assert [json.loads(line)["seq"] for line in lines_of(log.path)] == [1, 2, 3, 4, 5]
    assert log.verify().ok


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad", "expected"), [
    ({"user_id": "u"}, "'type' must be one of"),
    ({"type": "nonsense", "user_id": "u"}, "'nonsense'"),
    ({"type": "authentication", "user_id": "u"}, "method, success"),
    ({"type": "authorization", "permission": "x"}, "user_id, allowed"),
    ({"type": "execution", "user_id": "u", "sandbox_type": "process"}, "code_sha256, outcome"),
    ({"type": "violation", "user_id": "u"}, "limit"),
    ({"type": "tool"}, "user_id"),
    ({"type": "session", "user_id": "u", "when": datetime.now(UTC)}, "'when'"),
    ({"type": "session", "user_id": "u", "tags": {1, 2}}, "'tags'"),
    ({"type": "session", "user_id": "u", "score": float("nan")}, "'score'"),
    ({"type": "session", "user_id": "u", "bad": "\ud800"}, "'bad'"),
    ({"type": "session", "user_id": "u", "seq": 5}, "seq"),
    ({"type": "session", "user_id": "u", "hash": "0"}, "hash"),
    ({"type": "session", "user_id": "u", 3: "x"}, "strings"),
])
def test_invalid_events_are_rejected(tmp_path: Path, bad: dict, expected: str) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        log.record(bad)
    assert not log.path.exists()  # nothing written


def test_not_a_dict(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="must be a dict"):
        AuditLog(tmp_path / "audit.jsonl").record(["type", "session"])  # type: ignore[arg-type]


def test_configuration_error_is_a_security_exception() -> None:
    assert issubclass(ConfigurationError, SecurityException)


def test_schema_table_covers_every_type() -> None:
    assert set(REQUIRED_FIELDS) == set(EVENT_TYPES)
    assert all("user_id" in fields for fields in REQUIRED_FIELDS.values())


def test_all_event_types_accepted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for kind in EVENT_TYPES:
        log.record({"type": kind, **{name: "v" for name in REQUIRED_FIELDS[kind]}})
    assert [r["type"] for r in log.query()] == list(EVENT_TYPES)
    assert log.verify().ok


def test_values_are_normalised_so_hashes_survive_reading(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    rec = log.record({"type": "session", "user_id": "u", "pair": (1, 2),
                      "counts": {10: "a", 9: "b"}})
    assert rec["pair"] == [1, 2] and rec["counts"] == {"10": "a", "9": "b"}
    assert log.verify().ok


# -- query --------------------------------------------------------------------------------------

def test_query_filters(log: AuditLog) -> None:
    log.record({"type": "authentication", "user_id": "alice", "method": "token",
                "success": True})
    everything = log.query()
    assert [r["seq"] for r in everything] == list(range(1, 12))
    assert {r["seq"] for r in log.query(user_id="alice")} == {1, 3, 5, 7, 9, 11}
    assert [r["seq"] for r in log.query(event_type="authentication")] == [11]
    assert log.query(user_id="bob", event_type="authentication") == []
    assert [r["seq"] for r in log.query(limit=3)] == [9, 10, 11]
    assert [r["seq"] for r in log.query(user_id="bob", limit=2)] == [8, 10]
    assert log.query(limit=0) == []


def test_query_since(log: AuditLog) -> None:
    records = log.query()
    cut = records[6]["ts"]
    expected = [r["seq"] for r in records if r["ts"] >= cut]
    assert expected[0] == 7
    assert [r["seq"] for r in log.query(since=cut)] == expected
    as_dt = datetime.fromisoformat(cut)
    assert [r["seq"] for r in log.query(since=as_dt)] == expected
    assert [r["seq"] for r in log.query(since=as_dt.replace(tzinfo=None))] == expected
    elsewhere = as_dt.astimezone(timezone(timedelta(hours=5)))
    assert [r["seq"] for r in log.query(since=elsewhere.isoformat())] == expected
    assert log.query(since=as_dt + timedelta(days=1)) == []


@pytest.mark.parametrize("kwargs", [{"event_type": "nope"}, {"limit": -1}, {"limit": 1.5},
                                    {"since": "yesterday"}, {"since": 12}])
def test_query_rejects_bad_arguments(log: AuditLog, kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        log.query(**kwargs)


def test_query_missing_file_and_damage(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "none.jsonl").query() == []
    log = write_log(tmp_path / "audit.jsonl", 3)
    with log.path.open("ab") as f:
        f.write(b"not json\n{\"seq\": 4")  # a corrupt line and a torn one
    assert [r["seq"] for r in log.query()] == [1, 2, 3]


# -- tampering ----------------------------------------------------------------------------------

def test_edited_field(log: AuditLog) -> None:
    lines = lines_of(log.path)
    rec = json.loads(lines[4])
    rec["user_id"] = "mallory"
    lines[4] = canon(rec) + b"\n"
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("edited", 5, 5)


def test_edited_and_rehashed(log: AuditLog) -> None:
    lines = lines_of(log.path)
    rec = json.loads(lines[4])
    rec["action"] = "nothing to see"
    lines[4] = forge(rec)
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("edited", 5, 5)


def test_edited_whitespace_only(log: AuditLog) -> None:
    lines = lines_of(log.path)
    lines[2] = lines[2].replace(b",", b", ", 1)
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("edited", 3, 3)
    assert "canonical" in problem.message


def test_edited_last_record_rehashed_caught_by_head(log: AuditLog) -> None:
    lines = lines_of(log.path)
    rec = json.loads(lines[-1])
    rec["user_id"] = "mallory"
    lines[-1] = forge(rec)
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("edited", 10, 10)


def test_deleted_middle_record(log: AuditLog) -> None:
    lines = lines_of(log.path)
    del lines[4]
    put_lines(log.path, lines)
    report = log.verify()
    problem = only_problem(report)
    assert (problem.kind, problem.line, problem.seq) == ("deleted", 5, 5)
    assert report.records == 9


def test_deleted_first_records(log: AuditLog) -> None:
    put_lines(log.path, lines_of(log.path)[2:])
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("deleted", 1, 1)
    assert "1..2" in problem.message


def test_inserted_forged_record(log: AuditLog) -> None:
    lines = lines_of(log.path)
    fake = json.loads(lines[5])  # a copy of seq 6, chained onto seq 5 like the real one
    fake["user_id"] = "mallory"
    fake["action"] = "grant admin"
    lines.insert(5, forge(fake))
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 6, 6)


def test_inserted_record_with_broken_chain(log: AuditLog) -> None:
    lines = lines_of(log.path)
    fake = json.loads(lines[3])
    fake.update(prev="ab" * 32, user_id="mallory")
    lines.insert(7, forge(fake))
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 8, 4)


def test_inserted_far_future_seq(log: AuditLog) -> None:
    lines = lines_of(log.path)
    fake = json.loads(lines[0])
    fake.update(seq=99, prev="cd" * 32)
    lines.insert(3, forge(fake))
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 4, 99)


def test_inserted_replayed_line(log: AuditLog) -> None:
    lines = lines_of(log.path)
    lines.insert(7, lines[2])
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 8, 3)
    assert "copy of line 3" in problem.message


def test_inserted_after_the_head(log: AuditLog) -> None:
    lines = lines_of(log.path)
    last = json.loads(lines[-1])
    fake = {**last, "seq": 11, "prev": last["hash"], "user_id": "mallory"}
    put_lines(log.path, [*lines, forge(fake)])
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 11, 11)


def test_swapped_records(log: AuditLog) -> None:
    lines = lines_of(log.path)
    lines[3], lines[4] = lines[4], lines[3]
    put_lines(log.path, lines)
    problem = only_problem(log.verify())
    # Lines 4 and 5 now hold seq 5, seq 4; the record found where the seq goes back down
    # (line 5, seq 4) is named, with both neighbours in the message.
    assert (problem.kind, problem.line, problem.seq) == ("reordered", 5, 4)
    assert "after seq 3 (line 3)" in problem.message
    assert "before seq 5 (line 4)" in problem.message


def test_record_moved_far(log: AuditLog) -> None:
    lines = lines_of(log.path)
    moved = lines.pop(2)  # seq 3 moved to the end
    put_lines(log.path, [*lines, moved])
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("reordered", 10, 3)


def test_truncated_end(log: AuditLog) -> None:
    put_lines(log.path, lines_of(log.path)[:-2])
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("truncated", 9, 9)
    assert "9..10" in problem.message


@pytest.mark.parametrize("how", ["emptied", "removed"])
def test_truncated_to_nothing(log: AuditLog, how: str) -> None:
    if how == "emptied":
        log.path.write_bytes(b"")
    else:
        log.path.unlink()
    report = log.verify()
    problem = only_problem(report)
    assert (problem.kind, problem.line, problem.seq) == ("truncated", 1, 1)
    assert report.records == 0


def test_corrupt_line_in_the_middle(log: AuditLog) -> None:
    lines = lines_of(log.path)
    lines[6] = b"{this is not json\n"
    put_lines(log.path, lines)
    report = log.verify()
    kinds = {(p.kind, p.line) for p in report.problems}
    assert ("corrupt", 7) in kinds
    assert not report.ok


def test_head_missing_or_corrupt(log: AuditLog) -> None:
    log.head_path.unlink()
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line) == ("corrupt", 0)
    log.head_path.write_text("{]")
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line) == ("corrupt", 0)
    assert "head file" in str(problem)


def test_empty_new_log_verifies(tmp_path: Path) -> None:
    report = AuditLog(tmp_path / "none.jsonl").verify()
    assert report.ok and report.records == 0 and report.problems == []
    assert "OK" in str(report)


def test_report_text_lists_problems(log: AuditLog) -> None:
    put_lines(log.path, lines_of(log.path)[:-1])
    text = str(log.verify())
    assert "DAMAGED" in text and "line 10 (seq 10): truncated" in text


# -- crash recovery ----------------------------------------------------------------------------

def test_torn_last_line_is_terminated_and_reported(log: AuditLog) -> None:
    torn = lines_of(log.path)[-1][:40]  # a write cut short by a crash
    with log.path.open("ab") as f:
        f.write(torn)
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("corrupt", 11, None)

    rec = log.record(event(10))
    assert rec["seq"] == 11
    lines = lines_of(log.path)
    assert lines[10] == torn + b"\n"
    assert json.loads(lines[11]) == rec
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line) == ("corrupt", 11)
    assert [r["seq"] for r in log.query()] == list(range(1, 12))


def test_writer_died_before_updating_head(log: AuditLog) -> None:
    old_head = log.head_path.read_bytes()
    log.record(event(10))
    log.head_path.write_bytes(old_head)  # as if the process died between line and head
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 11, 11)
    assert log.record(event(11))["seq"] == 12  # the unheaded line is genuine: chain onto it
    assert log.verify().ok


def test_record_after_truncation_keeps_the_evidence(log: AuditLog) -> None:
    put_lines(log.path, lines_of(log.path)[:-2])
    rec = log.record(event(10))
    assert rec["seq"] == 11  # continues from the head, not from the truncated file
    problem = only_problem(log.verify())
    assert (problem.kind, problem.line, problem.seq) == ("deleted", 9, 9)


# -- concurrency --------------------------------------------------------------------------------

def _append_many(path: str, who: str, threads: int, per_thread: int,
                 barrier: threading.Barrier | None) -> None:
    log = AuditLog(path)
    if barrier is not None:
        barrier.wait()

    def run(t: int) -> None:
        for i in range(per_thread):
            log.record({"type": "tool", "user_id": who, "thread": t, "i": i})

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def test_concurrent_processes_and_threads(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.jsonl")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(5)
    procs = [ctx.Process(target=_append_many, args=(path, f"proc{p}", 2, 100, barrier))
             for p in range(4)]
    for p in procs:
        p.start()
    # The parent joins in with its own threads while the four processes append.
    _append_many(path, "parent", 4, 25, barrier)
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    log = AuditLog(path)
    records = log.query()
    assert len(records) == 4 * 200 + 100
    assert [r["seq"] for r in records] == list(range(1, 901))
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
        assert after["ts"] >= before["ts"]
    counts: dict[str, int] = {}
    for r in records:
        counts[r["user_id"]] = counts.get(r["user_id"], 0) + 1
    assert counts == {"proc0": 200, "proc1": 200, "proc2": 200, "proc3": 200, "parent": 100}
    report = log.verify()
    assert report.ok, str(report)
    assert report.records == 900
    assert json.loads(log.head_path.read_text())["seq"] == 900


# -- any damage is seen -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    log = write_log(tmp_path_factory.mktemp("pristine") / "audit.jsonl", 6)
    return log.path.read_bytes(), log.head_path.read_bytes()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_detected(pristine: tuple[bytes, bytes],
                                            data: st.DataObject) -> None:
    body, head = pristine
    at = data.draw(st.integers(0, len(body) - 1), label="offset")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[at]), label="byte")
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "audit.jsonl")
        log.path.write_bytes(body[:at] + bytes([byte]) + body[at + 1:])
        log.head_path.write_bytes(head)
        report = log.verify()
    assert not report.ok
    assert all(p.kind in audit.PROBLEM_KINDS for p in report.problems)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_removed_or_duplicated_line_is_detected(pristine: tuple[bytes, bytes],
                                                    data: st.DataObject) -> None:
    body, head = pristine
    lines = body.splitlines(keepends=True)
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    if data.draw(st.booleans(), label="remove"):
        del lines[i]
    else:
        lines.insert(data.draw(st.integers(0, len(lines)), label="to"), lines[i])
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "audit.jsonl")
        put_lines(log.path, lines)
        log.head_path.write_bytes(head)
        assert not log.verify().ok


# -- command line -------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "agenticraft.security.audit", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_cli_verify_ok(log: AuditLog) -> None:
    result = run_cli("verify", str(log.path))
    assert result.returncode == 0, result.stderr
    assert "OK: 10 records" in result.stdout


def test_cli_verify_damaged(log: AuditLog) -> None:
    lines = lines_of(log.path)
    del lines[4]
    put_lines(log.path, lines)
    result = run_cli("verify", str(log.path))
    assert result.returncode == 1
    assert "line 5 (seq 5): deleted" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_verify_missing_file(tmp_path: Path) -> None:
    result = run_cli("verify", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no audit log" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_verify_deleted_log_with_head_is_truncation(log: AuditLog) -> None:
    log.path.unlink()
    result = run_cli("verify", str(log.path))
    assert result.returncode == 1
    assert "truncated" in result.stdout


def test_cli_tail(log: AuditLog) -> None:
    result = run_cli("tail", str(log.path), "-n", "3", "--user", "bob")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert [json.loads(line)["seq"] for line in out] == [6, 8, 10]
    assert [line.encode() + b"\n" for line in out] == [lines_of(log.path)[i] for i in (5, 7, 9)]
    result = run_cli("tail", str(log.path), "--type", "authentication")
    assert result.returncode == 0 and result.stdout == ""
    assert len(run_cli("tail", str(log.path)).stdout.splitlines()) == 10


@pytest.mark.parametrize("args", [[], ["verify"], ["frobnicate", "x"],
                                  ["tail", "x", "-n", "-3"], ["tail", "x", "-n", "many"],
                                  ["tail", "x", "--type", "party"]])
def test_cli_bad_arguments(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr


def test_main_in_process(log: AuditLog, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(log.path)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["tail", str(log.path), "-n", "1"]) == 0
    assert main(["tail", str(log.path.with_name("missing.jsonl"))]) == 2
