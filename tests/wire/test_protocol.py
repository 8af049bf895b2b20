"""The frame protocol both sides of the jail speak: length-prefixed JSON objects, nothing else."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from agenticraft.wire import protocol
from agenticraft.wire.protocol import HEADER, MAX_FRAME, FrameBuffer, ProtocolError


def frame_of(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        yield left, right


def test_encode_is_a_length_prefix_and_compact_json() -> None:
    data = protocol.encode({"op": "run", "code": "x = 1"})
    (size,) = HEADER.unpack_from(data)
    assert size == len(data) - HEADER.size
    assert data[HEADER.size:] == b'{"op":"run","code":"x = 1"}'


def test_encode_turns_what_json_cannot_hold_into_its_repr() -> None:
    body = protocol.encode({"value": {1, 2}})[HEADER.size:]
    assert protocol.decode(body) == {"value": "{1, 2}"}


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "frame is not JSON"),
    (b"\xff\xfe", "frame is not JSON"),
    (b"[1, 2]", "frame is not a JSON object"),
    (b'"text"', "frame is not a JSON object"),
    (b"null", "frame is not a JSON object"),
])
def test_decode_refuses_anything_but_a_json_object(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        protocol.decode(body)


def test_send_and_recv_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    messages = [{"ev": "ready", "pid": 7}, {"ev": "done", "run": 1, "values": {"x": [1, "a"]}}]
    for message in messages:
        protocol.send(left, message)
    assert [protocol.recv(right), protocol.recv(right)] == messages


def test_recv_returns_none_at_a_clean_end(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    left.close()
    assert protocol.recv(right) is None


@pytest.mark.parametrize(("sent", "message"), [
    (HEADER.pack(10) + b"{}", "stream ended inside a frame"),  # body cut short
    (HEADER.pack(10)[:2], "stream ended inside a frame"),       # header cut short
    (HEADER.pack(MAX_FRAME + 1), "over the"),                   # refused before the body
    (frame_of(b"[1]"), "not a JSON object"),
])
def test_recv_refuses_a_bad_frame(pair: tuple[socket.socket, socket.socket], sent: bytes,
                                  message: str) -> None:
    left, right = pair
    left.sendall(sent)
    left.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match=message):
        protocol.recv(right)


def test_frame_buffer_reassembles_frames_split_anywhere() -> None:
    messages = [{"n": i, "text": "x" * i} for i in range(5)]
    stream = b"".join(protocol.encode(m) for m in messages)
    buffer = FrameBuffer()
    received = []
    for i in range(0, len(stream), 3):  # byte 3 at a time: headers and bodies split too
        received += buffer.feed(stream[i:i + 3])
    assert received == messages


def test_frame_buffer_returns_every_complete_frame_of_one_feed() -> None:
    buffer = FrameBuffer()
    whole = protocol.encode({"a": 1}) + protocol.encode({"b": 2})
    partial = protocol.encode({"c": 3})
    assert buffer.feed(whole + partial[:-1]) == [{"a": 1}, {"b": 2}]
    assert buffer.feed(b"") == []
    assert buffer.feed(partial[-1:]) == [{"c": 3}]


def test_frame_buffer_refuses_an_oversize_header_without_waiting_for_the_body() -> None:
    with pytest.raises(ProtocolError, match="over the"):
        FrameBuffer().feed(HEADER.pack(MAX_FRAME + 1))


@pytest.mark.parametrize("body", [b"garbage", b"[]", b"\xff"])
def test_frame_buffer_refuses_a_frame_that_is_not_a_json_object(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameBuffer().feed(frame_of(body))


# -- issue 13: budgets and depth, checked before decoding ----------------------------------------
def test_event_frames_are_marked_in_their_header() -> None:
    data = protocol.encode({"ev": "event", "run": 1, "data": {}})
    size, event = protocol.split_header(data)
    assert event and size == len(data) - HEADER.size
    assert protocol.split_header(protocol.encode({"ev": "done"})) == (
        len(protocol.encode({"ev": "done"})) - HEADER.size, False)


@pytest.mark.parametrize("depth", [protocol.MAX_DEPTH + 1, 5000, 200_000])
def test_too_deep_a_frame_is_a_protocol_error_not_a_recursion_error(depth: int) -> None:
    body = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(ProtocolError, match="nest"):
        protocol.decode(body)


def test_depth_ignores_brackets_inside_strings() -> None:
    text = "[" * 1000 + '\\"' + "{" * 1000
    body = b'{"a":[[["' + text.encode() + b'"]]]}'
    assert protocol.decode(body)["a"][0][0][0] == "[" * 1000 + '"' + "{" * 1000
    wide = b'{"a":[' + b",".join([b"[1,[2]]"] * 5000) + b"]}"
    assert len(protocol.decode(wide)["a"]) == 5000


def test_refused_frames_are_skipped_undecoded_even_when_split() -> None:
    seen: list[tuple[int, bool]] = []

    def admit(size: int, event: bool) -> bool:
        seen.append((size, event))
        return size < 100

    big = protocol.encode({"ev": "event", "data": "x" * 1000})
    small = protocol.encode({"ev": "done", "run": 1})
    buffer = FrameBuffer(admit)
    stream = big + small
    frames = []
    for i in range(0, len(stream), 7):  # arrives in pieces: the big body is never buffered
        buffer.push(stream[i:i + 7])
        assert len(buffer._buf) < 100
        while (frame := buffer.pop()) is not None:
            frames.append(frame)
    assert frames == [{"ev": "done", "run": 1}]
    assert seen == [(len(big) - HEADER.size, True), (len(small) - HEADER.size, False)]


def test_a_refusal_that_raises_keeps_the_stream_in_step() -> None:
    def admit(size: int, event: bool) -> bool:
        if event:
            raise ProtocolError("no more events")
        return True

    buffer = FrameBuffer(admit)
    buffer.push(protocol.encode({"ev": "event", "data": 1}) + protocol.encode({"ev": "done"}))
    with pytest.raises(ProtocolError, match="no more events"):
        buffer.pop()
    assert buffer.pop() == {"ev": "done"}


def test_frames_are_decoded_one_at_a_time() -> None:
    decoded: list[int] = []
    buffer = FrameBuffer(lambda size, event: decoded.append(size) is None)
    buffer.push(protocol.encode({"a": 1}) * 1000)
    assert buffer.pop() == {"a": 1}
    assert len(decoded) == 1


def test_the_last_whole_frame_is_found_after_a_torn_one() -> None:
    torn = protocol.encode({"ev": "event", "data": "x" * 5000})[:3000]
    last = protocol.encode({"ev": "rolled_back", "run": 3, "status": 9})
    assert protocol.last_frame(torn + last) == {"ev": "rolled_back", "run": 3, "status": 9}
    assert protocol.last_frame(torn) is None
    assert protocol.last_frame(last[:-1]) is None
