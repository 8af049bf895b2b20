"""Stream text gathered into as few chunks as possible, in order: the one batching rule.

Two places batch with it, for different reasons. The worker's channel batches so that a chatty
cell sends few frames across the boundary (as ipykernel's ``OutStream`` does). The parent's relay
batches again before IOPub because it must not rely on the worker's cooperation: hostile code can
write one byte per frame or straight to its stdout pipe, and the browser must still get a few
``stream`` messages, not a flood.
"""

from __future__ import annotations


class StreamBatch:
    """Pending ``(name, text)`` chunks; adjacent chunks of the same stream are merged."""

    def __init__(self) -> None:
        self._chunks: list[tuple[str, str]] = []
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def add(self, name: str, text: str) -> None:
        if self._chunks and self._chunks[-1][0] == name:
            self._chunks[-1] = (name, self._chunks[-1][1] + text)
        else:
            self._chunks.append((name, text))
        self.size += len(text)

    def drain(self) -> list[tuple[str, str]]:
        """Everything pending, oldest first; the batch is empty afterwards."""
        chunks, self._chunks, self.size = self._chunks, [], 0
        return chunks
