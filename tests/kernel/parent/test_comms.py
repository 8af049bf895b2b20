"""The kernel's comm table: the worker's comms tracked, the parent's own served and listed."""

from __future__ import annotations

from typing import Any

import comm

from agenticraft_kernel.parent.comms import CommTable


def test_worker_comms_are_tracked_and_listed_by_target() -> None:
    table = CommTable()
    table.track("comm_open", {"comm_id": "a", "target_name": "jupyter.widget"})
    table.track("comm_open", {"comm_id": "b", "target_name": "other"})
    table.track("comm_close", {"comm_id": "b"})
    assert table.listing() == {"a": {"target_name": "jupyter.widget"}}
    assert table.listing("other") == {}
    assert not table.is_parent("a")


def test_parent_comms_are_the_parents_and_publish_through_it() -> None:
    saved = comm.create_comm, comm.get_comm_manager
    published: list[tuple[str, dict[str, Any]]] = []
    table = CommTable()
    try:
        table.serve_parent(lambda kind, content, _meta, _buffers: published.append(
            (kind, content)))
        opened = comm.create_comm(target_name="jupyter.widget", data={"state": {}})
        table.parent.register_comm(opened)  # type: ignore[union-attr]
        assert table.is_parent(opened.comm_id)
        assert table.listing("jupyter.widget") == {opened.comm_id: {
            "target_name": "jupyter.widget"}}
        assert published[0][0] == "comm_open"
    finally:
        comm.create_comm, comm.get_comm_manager = saved
