"""Tamper-evident, append-only audit log: JSON lines chained by SHA-256.

We considered ``jupyter_events`` (JSON-Schema validated event logging) for the event schemas, but
the engine package must not import any Jupyter package: it runs in plain scripts, agents and
sandbox workers where Jupyter is absent, and pulling Jupyter (and traitlets configuration) into
the code that records security decisions would widen what has to be trusted. The schema is
therefore a small hand-written table of required fields (``REQUIRED_FIELDS``), kept in
``records`` next to the typed builders every caller uses to make its events.

Each line is the canonical JSON of one record: the event's fields plus ``seq`` (1-based),
``ts`` (UTC, microseconds), ``prev`` (the previous record's ``hash``, 64 zeros for the first)
and ``hash`` (SHA-256 of the canonical JSON of the record without ``hash``). A sidecar
``<path>.head`` holds ``{"seq", "hash"}`` of the last record so that removing records from the
end is detectable too. There is no secret key: someone who can rewrite the whole log *and* the
head can forge a consistent history; the chain makes every partial edit visible.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from agenticraft.security.records import EVENT_TYPES, REQUIRED_FIELDS
from agenticraft.wire.errors import ConfigurationError, SecurityException

PROBLEM_KINDS = ("edited", "deleted", "inserted", "reordered", "truncated", "corrupt")
GENESIS = "0" * 64
RESERVED_FIELDS = ("seq", "ts", "prev", "hash")
_HEX = frozenset("0123456789abcdef")
_CHUNK = 65536  # bytes read per step when scanning backwards for the last line


def canonical(obj: Any) -> str:
    """The one serialisation that is hashed and written, so any byte change is detectable."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_bytes(obj: Any) -> bytes:
    # surrogatepass: a tampered line may decode to lone surrogates; hashing must not raise.
    return canonical(obj).encode("utf-8", "surrogatepass")


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``record`` without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical_bytes(body)).hexdigest()


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def _parse_record(raw: bytes) -> dict[str, Any] | None:
    """A line as a record, or None when it is not one (torn, not JSON, chain fields malformed)."""
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict):
        return None
    seq = rec.get("seq")
    if type(seq) is not int or seq < 1:
        return None
    if not (_is_digest(rec.get("prev")) and _is_digest(rec.get("hash"))):
        return None
    return rec


def _validate(event: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-normalised copy of ``event``; raises ConfigurationError naming what is wrong."""
    if not isinstance(event, Mapping):
        raise ConfigurationError(
            f"An audit event must be a dict, not {type(event).__name__}.")
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        raise ConfigurationError(
            f"Audit event 'type' must be one of {', '.join(EVENT_TYPES)}; got {kind!r}.")
    missing = [name for name in REQUIRED_FIELDS[kind] if name not in event]
    if missing:
        raise ConfigurationError(
            f"Audit event of type {kind!r} is missing required field(s): {', '.join(missing)}.")
    reserved = [name for name in RESERVED_FIELDS if name in event]
    if reserved:
        raise ConfigurationError(
            f"Audit event field(s) {', '.join(reserved)} are set by the log; remove them.")
    fields: dict[str, Any] = {}
    for name, value in event.items():
        if not isinstance(name, str):
            raise ConfigurationError(f"Audit event field names must be strings, got {name!r}.")
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
            text.encode("utf-8")
            # Round-trip so the stored record hashes the same after it is read back
            # (tuples become lists, non-string dict keys become strings).
            fields[name] = json.loads(text)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConfigurationError(
                f"Audit event field {name!r} is not JSON-serialisable "
                f"({type(value).__name__}): {exc}.") from None
    return fields


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _as_utc(since: datetime | str) -> datetime:
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since)
        except ValueError:
            raise ConfigurationError(
                f"'since' must be an ISO-8601 timestamp, got {since!r}.") from None
    if not isinstance(since, datetime):
        raise ConfigurationError(
            f"'since' must be a datetime or ISO string, not {type(since).__name__}.")
    # A naive datetime is taken as UTC, the zone every record is written in.
    return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)


class _Head(NamedTuple):
    seq: int
    hash: str


HEAD_SIZE = 160  # bytes of the in-place head file (JSON padded with spaces)


def _load_head(path: Path) -> tuple[_Head | None, str | None]:
    """(head, None), (None, None) when there is no head file, or (None, why it is unusable)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"head file {path} is unreadable: {exc}"
    if (not isinstance(data, dict) or type(data.get("seq")) is not int or data["seq"] < 0
            or not _is_digest(data.get("hash"))):
        return None, f"head file {path} is malformed"
    return _Head(data["seq"], data["hash"]), None


def _lines_backward(fd: int, size: int) -> Iterator[bytes]:
    """Non-empty lines of the file, last first, reading only as far back as needed."""
    pos, buf = size, b""
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        parts = buf.split(b"\n")
        buf = parts[0]
        for part in reversed(parts[1:]):
            if part:
                yield part
    if buf:
        yield buf


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):  # only on a full disk or similar; the next record() repairs it
        raise SecurityException(
            f"Audit log write was cut short ({written} of {len(data)} bytes); "
            "free disk space and retry.")


@dataclass(frozen=True)
class Problem:
    """One finding of ``verify()``. ``line`` 0 refers to the head file, not a log line."""

    line: int
    seq: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = "head file" if self.line == 0 else f"line {self.line}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class VerifyReport:
    """Result of ``verify()``: ``ok`` only when there are no problems."""

    ok: bool
    records: int
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        if self.ok:
            return f"audit log OK: {self.records} records, hash chain intact"
        lines = [f"audit log DAMAGED: {self.records} records, {len(self.problems)} problem(s):"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


class _Entry(NamedTuple):
    line: int
    seq: int
    prev: str
    hash: str
    intact: bool  # stored hash matches the content and the line is canonical
    why: str  # why it is not intact


class AuditLog:
    """An append-only JSON-lines audit log, safe to append to from many processes and threads.

    Every ``record()`` opens its own descriptor and takes ``flock(LOCK_EX)`` on it: the lock
    belongs to the open file, so threads and forked processes exclude one another alike.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self._path = Path(path)
        self._head_path = self._path.with_name(self._path.name + ".head")
        self._fsync = fsync
        # (device, inode, size, seq, hash) right after this object's last write: when the
        # file still has exactly that identity and size under the lock, nobody appended since
        # and the tip is known without reading the file's tail and the head file again.
        self._last: tuple[int, int, int, int, str] | None = None
        self._last_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def head_path(self) -> Path:
        return self._head_path

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r}, fsync={self._fsync})"

    # -- writing ---------------------------------------------------------------------------

    def ensure_exists(self) -> None:
        """Make the log and its head exist (an empty log and the genesis head) if they do not
        yet: a sandbox can hide only a path that exists when its mounts are made, and the first
        record often comes after the first run (the log inside a working directory would be
        readable from the workers confined before it). Best effort: OSError is the caller's
        to ignore (then nothing changed)."""
        if self._path.exists() and self._head_path.exists():
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Only for an empty log: a log with records and no head is damage verify() reports,
            # never repaired here.
            if os.fstat(fd).st_size == 0 and not self._head_path.exists():
                self._write_head(_Head(0, GENESIS))
        finally:
            os.close(fd)

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``event`` as the next record and return the record as written."""
        rec = _validate(event)
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            stat = os.fstat(fd)
            size = stat.st_size
            last = self._last
            if last is not None and last[:3] == (stat.st_dev, stat.st_ino, size):
                last_seq, last_hash = last[3], last[4]  # our own write is still the tip
            else:
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A torn line from a crash: end it so the new record starts on its own
                    # line; verify() reports the torn line as corrupt.
                    _write_all(fd, b"\n")
                    size += 1
                last_seq, last_hash = self._tip(fd, size)
            rec.update(seq=last_seq + 1, ts=_now(), prev=last_hash)
            rec["hash"] = record_hash(rec)
            line = _canonical_bytes(rec) + b"\n"
            _write_all(fd, line)
            if self._fsync:
                os.fsync(fd)
            self._write_head(_Head(rec["seq"], rec["hash"]))
            with self._last_lock:
                self._last = (stat.st_dev, stat.st_ino, size + len(line), rec["seq"],
                              rec["hash"])
        except BaseException:
            self._last = None
            raise
        finally:
            os.close(fd)  # releases the lock
        return rec

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            return os.open(self._path, flags)
        except FileNotFoundError:
            pass
        self._make_parents()
        try:
            fd = os.open(self._path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another writer created it first
            return os.open(self._path, flags)
        os.fchmod(fd, 0o600)  # exact mode whatever the umask
        return fd

    def _make_parents(self) -> None:
        missing: list[Path] = []
        parent = self._path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(directory, 0o700)

    def _tip(self, fd: int, size: int) -> tuple[int, str]:
        """(seq, hash) to chain the next record onto. Caller holds the lock."""
        last: dict[str, Any] | None = None
        for raw in _lines_backward(fd, size):
            last = _parse_record(raw)
            if last is not None:
                break
        head, _ = _load_head(self._head_path)
        if head is None:
            return (last["seq"], last["hash"]) if last else (0, GENESIS)
        if last is not None and (
                (last["seq"], last["hash"]) == head
                # The writer died between the line and the head update: the line is genuine.
                or (last["seq"] == head.seq + 1 and last["prev"] == head.hash)):
            return last["seq"], last["hash"]
        # The file disagrees with the head (records removed or forged): chain onto the head so
        # the damage stays visible to verify() instead of being papered over.
        return head.seq, head.hash

    def _write_head(self, head: _Head) -> None:
        data = json.dumps({"seq": head.seq, "hash": head.hash}, sort_keys=True).encode() + b"\n"
        if not self._fsync:
            # Fast path: overwrite a fixed-size head in place (one pwrite under the lock; a
            # rename costs more than the record itself). With fsync=True the crash-safe
            # write-and-rename below is used instead.
            padded = data[:-1].ljust(HEAD_SIZE - 1) + b"\n"
            fd = os.open(self._head_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.pwrite(fd, padded, 0)
                if os.fstat(fd).st_size != HEAD_SIZE:
                    os.ftruncate(fd, HEAD_SIZE)
            finally:
                os.close(fd)
            return
        tmp = self._head_path.with_name(self._head_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._head_path)
        if self._fsync:
            dir_fd = os.open(self._head_path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # -- reading ---------------------------------------------------------------------------

    def _records(self) -> Iterator[dict[str, Any]]:
        """Stream complete, well-formed records (a line still being written is skipped)."""
        try:
            with open(self._path, "rb") as handle:
                for raw in handle:
                    if raw.endswith(b"\n"):
                        rec = _parse_record(raw[:-1])
                        if rec is not None:
                            yield rec
        except FileNotFoundError:
            return

    def query(self, user_id: str | None = None, event_type: str | None = None,
              since: datetime | str | None = None, limit: int | None = None,
              ) -> list[dict[str, Any]]:
        """Records matching all given filters, oldest first; ``limit`` keeps the newest N."""
        if event_type is not None and event_type not in EVENT_TYPES:
            raise ConfigurationError(
                f"event_type must be one of {', '.join(EVENT_TYPES)}; got {event_type!r}.")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ConfigurationError(f"limit must be a non-negative integer, got {limit!r}.")
        after = _as_utc(since) if since is not None else None
        found: deque[dict[str, Any]] = deque(maxlen=limit)
        for rec in self._records():
            if user_id is not None and rec.get("user_id") != user_id:
                continue
            if event_type is not None and rec.get("type") != event_type:
                continue
            if after is not None:
                try:
                    if _as_utc(rec.get("ts", "")) < after:
                        continue
                except ConfigurationError:
                    continue
            found.append(rec)
        return list(found)

    # -- verification ----------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check the whole chain and the head; name every problem. Never raises on damage."""
        problems: list[Problem] = []
        entries: list[_Entry] = []
        lines = 0
        try:
            with open(self._path, "rb") as handle:
                for lines, raw in enumerate(handle, start=1):
                    entry = _entry(lines, raw)
                    if isinstance(entry, str):
                        problems.append(Problem(lines, None, "corrupt", entry))
                    else:
                        entries.append(entry)
        except FileNotFoundError:
            pass  # a missing log is checked against the head like an empty one
        head, head_error = _load_head(self._head_path)
        if head_error:
            problems.append(Problem(0, None, "corrupt", head_error))
        elif head is None and entries:
            problems.append(Problem(0, None, "corrupt",
                                    f"head file {self._head_path} is missing, so records "
                                    "removed from the end cannot be detected"))
        problems += _classify(entries, head, lines)
        order = {kind: i for i, kind in enumerate(PROBLEM_KINDS)}
        problems.sort(key=lambda p: (p.line, order[p.kind]))
        return VerifyReport(ok=not problems, records=len(entries), problems=problems)


def _entry(line: int, raw: bytes) -> _Entry | str:
    """A parsed line, or the reason it is corrupt."""
    if not raw.endswith(b"\n"):
        return "line is not newline-terminated (torn write)"
    body = raw[:-1]
    rec = _parse_record(body)
    if rec is None:
        return "line is not a JSON audit record"
    try:
        actual = record_hash(rec)
        is_canonical = _canonical_bytes(rec) == body
    except (ValueError, RecursionError):
        return "line is not a JSON audit record"
    why = ""
    if actual != rec["hash"]:
        why = "its hash does not match its content (a field was changed)"
    elif not is_canonical:
        why = "its line is not in canonical form (it was rewritten)"
    return _Entry(line, rec["seq"], rec["prev"], rec["hash"], not why, why)


def _best_chain(entries: list[_Entry], head: _Head | None,
                ) -> tuple[list[int], list[tuple[int | None, int]]]:
    """Reconstruct the genuine chain from hash links, independent of file order.

    Returns the chain (indices into ``entries``) and its breaks ``(before, after)`` where no
    record links ``before`` to ``after`` (``before`` None means the genesis). Where the chain
    forks (a forged record claiming a real record as its ``prev``), the branch that reaches the
    head wins, then the longer one, then the earlier line.
    """
    succ: dict[tuple[str, int], list[int]] = {}
    for i, e in enumerate(entries):
        succ.setdefault((e.prev, e.seq), []).append(i)

    def successors(seq: int, digest: str) -> list[int]:
        return succ.get((digest, seq + 1), [])

    # Links always go from seq to seq + 1, so descending seq order visits successors first.
    score: list[tuple[bool, int]] = [(False, 0)] * len(entries)
    by_seq = sorted(range(len(entries)), key=lambda i: (entries[i].seq, entries[i].line))
    for i in reversed(by_seq):
        e = entries[i]
        best = max((score[j] for j in successors(e.seq, e.hash)), default=(False, 0))
        score[i] = (best[0] or (head is not None and (e.seq, e.hash) == head), best[1] + 1)

    def rank(i: int) -> tuple[tuple[bool, int], int]:
        return score[i], -entries[i].line

    used = [False] * len(entries)
    chain: list[int] = []
    breaks: list[tuple[int | None, int]] = []
    cur: int | None = None
    cur_seq, cur_hash = 0, GENESIS
    pos = 0
    while True:
        candidates = [j for j in successors(cur_seq, cur_hash) if not used[j]]
        if candidates:
            nxt = max(candidates, key=rank)
        else:
            # No record links here: resume at the lowest later seq (a gap, or a rewrite).
            while pos < len(by_seq) and (used[by_seq[pos]] or entries[by_seq[pos]].seq <= cur_seq):
                pos += 1
            if pos == len(by_seq):
                break
            low = entries[by_seq[pos]].seq
            if head is not None and low > head.seq:
                break  # records past the head that do not link to it are strays
            group = [j for j in by_seq[pos:] if entries[j].seq == low and not used[j]]
            nxt = max(group, key=rank)
            breaks.append((cur, nxt))
        used[nxt] = True
        chain.append(nxt)
        cur, cur_seq, cur_hash = nxt, entries[nxt].seq, entries[nxt].hash
    return chain, breaks


def _out_of_place(lines: list[int]) -> set[int]:
    """Positions not in a longest increasing subsequence of ``lines``: the moved records."""
    tails: list[int] = []  # tails[k]: position ending the best run of length k + 1
    tail_values: list[int] = []  # lines[tails[k]], kept sorted for bisect
    back: list[int] = [-1] * len(lines)
    for i, value in enumerate(lines):
        k = bisect_left(tail_values, value)
        back[i] = tails[k - 1] if k else -1
        if k == len(tails):
            tails.append(i)
            tail_values.append(value)
        else:
            tails[k] = i
            tail_values[k] = value
    keep: set[int] = set()
    i = tails[-1] if tails else -1
    while i != -1:
        keep.add(i)
        i = back[i]
    return set(range(len(lines))) - keep


def _span(first: int, last: int) -> str:
    return f"record seq {first} is" if first == last else f"records seq {first}..{last} are"


def _classify(entries: list[_Entry], head: _Head | None, lines: int) -> list[Problem]:
    """Name each deviation of the file from the reconstructed chain and the head.

    Off-chain records are ``inserted``; a chain record whose hash or form is wrong is ``edited``;
    a chain break with a seq gap is ``deleted``, without a gap the record before it was re-hashed
    (``edited``); chain records out of file order are ``reordered`` (the fewest that explain the
    order); a chain that ends before the head is ``truncated``.
    """
    problems: list[Problem] = []
    chain, breaks = _best_chain(entries, head)
    on_chain = set(chain)
    chained = {entries[i].hash: entries[i] for i in chain}

    past_head = {i for i in chain if head is not None and entries[i].seq > head.seq}
    for i in chain:
        e = entries[i]
        if i in past_head:
            problems.append(Problem(e.line, e.seq, "inserted",
                                    f"record seq {e.seq} comes after the head (seq {head.seq}): "
                                    "appended behind the log's back, or the writer crashed "
                                    "before updating the head"))
        elif not e.intact:
            problems.append(Problem(e.line, e.seq, "edited", f"record seq {e.seq}: {e.why}"))

    for i, e in enumerate(entries):
        if i in on_chain:
            continue
        original = chained.get(e.hash)
        if original is not None:
            why = f"it is a copy of line {original.line}"
        elif head is not None and e.seq > head.seq:
            why = f"it comes after the head (seq {head.seq}) and does not link to the chain"
        else:
            why = "it does not link into the hash chain (forged or replayed)"
        if not e.intact:
            why += "; also " + e.why
        problems.append(Problem(e.line, e.seq, "inserted", f"record seq {e.seq}: {why}"))

    for before, after in breaks:
        b = entries[after]
        a_seq = entries[before].seq if before is not None else 0
        if b.seq > a_seq + 1:
            problems.append(Problem(b.line, a_seq + 1, "deleted",
                                    f"{_span(a_seq + 1, b.seq - 1)} missing before seq {b.seq} "
                                    "(deleted)"))
        elif before is None:
            if b.intact:  # an edited first record is already reported
                problems.append(Problem(b.line, b.seq, "edited",
                                        "the first record does not start from the genesis "
                                        "hash (it was rewritten and re-hashed)"))
        elif entries[before].intact and b.intact:  # otherwise already reported as edited
            a = entries[before]
            problems.append(Problem(a.line, a.seq, "edited",
                                    f"record seq {a.seq} was rewritten and re-hashed: seq "
                                    f"{b.seq} (line {b.line}) chains to a different hash"))

    ordered = [i for i in chain if i not in past_head]
    for k in sorted(_out_of_place([entries[i].line for i in ordered])):
        e = entries[ordered[k]]
        around = []
        if k:
            p = entries[ordered[k - 1]]
            around.append(f"after seq {p.seq} (line {p.line})")
        if k + 1 < len(ordered):
            n = entries[ordered[k + 1]]
            around.append(f"before seq {n.seq} (line {n.line})")
        where = "it belongs " + " and ".join(around) if around else "it belongs elsewhere"
        problems.append(Problem(e.line, e.seq, "reordered",
                                f"record seq {e.seq} is out of order: {where}"))

    if head is not None:
        last = entries[ordered[-1]] if ordered else None
        last_seq = last.seq if last else 0
        if last_seq < head.seq:
            problems.append(Problem(lines + 1, last_seq + 1, "truncated",
                                    f"the log ends at seq {last_seq} but the head says seq "
                                    f"{head.seq}: {_span(last_seq + 1, head.seq)} missing "
                                    "from the end"))
        elif last is not None and last.hash != head.hash and last.intact:
            problems.append(Problem(last.line, last.seq, "edited",
                                    f"record seq {last.seq} does not match the head file (it was "
                                    "rewritten and re-hashed, or the head was altered)"))
    return problems


# -- command line ------------------------------------------------------------------------------

def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agenticraft-audit", description="Verify or read an AgentiCraft audit log.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check the hash chain; exit 1 if damaged")
    verify.add_argument("path", help="the audit log (JSON lines)")
    tail = commands.add_parser("tail", help="print the most recent records as JSON lines")
    tail.add_argument("path", help="the audit log (JSON lines)")
    tail.add_argument("-n", type=_count, default=10, help="how many records (default 10)")
    tail.add_argument("--user", help="only records of this user_id")
    tail.add_argument("--type", choices=EVENT_TYPES, help="only records of this event type")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenticraft-audit`` / ``python -m agenticraft.security.audit``."""
    args = _parser().parse_args(argv)
    log = AuditLog(args.path)
    if log.path.is_dir():
        print(f"agenticraft-audit: {log.path} is a directory, not an audit log", file=sys.stderr)
        return 2
    # A missing log whose head still exists is evidence of truncation, not a usage error.
    if not log.path.exists() and (args.command == "tail" or not log.head_path.exists()):
        print(f"agenticraft-audit: no audit log at {log.path}", file=sys.stderr)
        return 2
    try:
        if args.command == "verify":
            report = log.verify()
            print(report)
            return 0 if report.ok else 1
        records = log.query(user_id=args.user, event_type=args.type, limit=args.n)
    except OSError as exc:
        print(f"agenticraft-audit: cannot read {log.path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    for rec in records:
        if out is not None:
            out.write(_canonical_bytes(rec) + b"\n")
        else:
            print(canonical(rec))
    if out is not None:
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
