"""The audit log reuses the tip of its own last write only while nobody appended since."""

from __future__ import annotations

import itertools

from agenticraft.security.audit import AuditLog

EVENT = {"type": "execution", "user_id": "u", "sandbox_type": "restricted",
         "code_sha256": "0" * 64, "outcome": "ok"}


def test_interleaved_writers_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    first, second = AuditLog(path), AuditLog(path)
    records = []
    for index in range(20):
        writer = first if index % 3 else second
        records.append(writer.record(EVENT))
    assert [r["seq"] for r in records] == list(range(1, 21))
    for older, newer in itertools.pairwise(records):
        assert newer["prev"] == older["hash"]
    report = first.verify()
    assert report.ok, str(report)
    assert report.records == 20


def test_a_foreign_append_is_not_papered_over(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.record(EVENT)
    with open(path, "ab") as fh:  # someone appends a line behind the log's back
        fh.write(b'{"not": "a record"}\n')
    rec = log.record(EVENT)
    # the cached tip was not used: the size changed, so the file was read again
    assert rec["seq"] == 2
