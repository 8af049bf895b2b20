"""The one stream-batching rule both sides use: adjacent text of one stream merged, order kept."""

from __future__ import annotations

from agenticraft.wire.streams import StreamBatch


def test_adjacent_chunks_of_one_stream_merge_and_order_is_kept() -> None:
    batch = StreamBatch()
    assert not batch
    for name, text in [("stdout", "a"), ("stdout", "b"), ("stderr", "!"), ("stdout", "c")]:
        batch.add(name, text)
    assert batch and batch.size == 4
    assert batch.drain() == [("stdout", "ab"), ("stderr", "!"), ("stdout", "c")]


def test_drain_empties_the_batch() -> None:
    batch = StreamBatch()
    batch.add("stdout", "text")
    batch.drain()
    assert not batch and batch.size == 0 and batch.drain() == []
