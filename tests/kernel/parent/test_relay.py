"""The parent's IOPub relay: worker events republished in order, stream text coalesced, comm
buffers decoded, forged messages for the parent's own comms dropped."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from agenticraft.sandbox.result import Output
from agenticraft_kernel.parent.output_policy import OutputPolicy
from agenticraft_kernel.parent.relay import Relay


class Published(list):
    """``publish`` callback that records (msg_type, content, buffers, metadata)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def __call__(self, msg_type: str, content: dict[str, Any], buffers: Any,
                 metadata: Any = None) -> None:
        self.append((msg_type, content, buffers, metadata))
        self.arrived.set()


def stream(name: str, text: str) -> tuple[str, dict[str, str], None, None]:
    return ("stream", {"name": name, "text": text}, None, None)


async def test_streams_are_coalesced_and_flushed_by_a_timer() -> None:
    published = Published()
    relay = Relay(published)
    relay.output(Output("stdout", "a"))
    relay.output(Output("stdout", "b"))
    relay.output(Output("stderr", "!"))
    relay.output(Output("display", "c"))  # not stderr: stdout
    assert published == []
    await asyncio.wait_for(published.arrived.wait(), timeout=5)
    assert published == [stream("stdout", "ab"), stream("stderr", "!"), stream("stdout", "c")]


async def test_other_events_flush_streams_first_and_keep_their_order() -> None:
    published = Published()
    relay = Relay(published)
    relay.output(Output("stdout", "before"))
    relay.event({"type": "display_data", "data": {"text/plain": "1"}, "metadata": {}})
    relay.event({"type": "execute_result", "data": {}, "metadata": {}, "execution_count": 3})
    relay.event({"type": "not_an_iopub_message", "x": 1})
    relay.flush()
    assert published == [
        stream("stdout", "before"),
        ("display_data", {"data": {"text/plain": "1"}, "metadata": {}}, None, None),
        ("execute_result", {"data": {}, "metadata": {}, "execution_count": 3}, None, None)]


async def test_cell_started_and_input_requests_go_to_their_callbacks() -> None:
    published = Published()
    started: list[bool] = []
    inputs: list[tuple[str, bool]] = []
    relay = Relay(published, on_input=lambda prompt, password: inputs.append((prompt, password)),
                  on_started=lambda: started.append(True))
    relay.event({"type": "cell_started"})
    relay.output(Output("stdout", "Name? "))
    relay.event({"type": "input_request", "prompt": "Name? ", "password": True})
    assert started == [True]
    assert inputs == [("Name? ", True)]
    assert published == [stream("stdout", "Name? ")]  # the prompt's text is out first


async def test_comm_messages_carry_binary_buffers_and_metadata() -> None:
    published = Published()
    comms: list[tuple[str, dict[str, Any]]] = []
    relay = Relay(published, on_comm=lambda kind, content: comms.append((kind, content)))
    content = {"comm_id": "w1", "data": {"method": "update"}}
    relay.event({"type": "comm_msg", "content": content,
                 "buffers": [base64.b64encode(b"\x00\x01").decode()],
                 "metadata": {"version": "2.1.0"}})
    relay.event({"type": "comm_close", "content": "not a dict"})
    assert published == [("comm_msg", content, [b"\x00\x01"], {"version": "2.1.0"}),
                         ("comm_close", {}, None, {})]
    assert comms == [("comm_msg", content), ("comm_close", {})]


async def test_forged_messages_on_the_parents_comms_are_dropped() -> None:
    published = Published()
    comms: list[Any] = []
    relay = Relay(published, on_comm=lambda *a: comms.append(a),
                  blocked=lambda comm_id: comm_id == "panel")
    relay.event({"type": "comm_msg", "content": {"comm_id": "panel", "data": {}}})
    relay.event({"type": "comm_open", "content": {"comm_id": "panel", "target_name": "x"}})
    assert published == [] and comms == []


async def test_errors_are_published_and_remembered() -> None:
    published = Published()
    relay = Relay(published)
    relay.event({"type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []})
    made = relay.error("ResourceLimitExceeded", "timeout", ["line"])
    assert made == {"ename": "ResourceLimitExceeded", "evalue": "timeout", "traceback": ["line"]}
    assert relay.errors == [{"ename": "ValueError", "evalue": "bad", "traceback": []}, made]
    assert [p[0] for p in published] == ["error", "error"]


# -- issue 13: the output policy on every bundle, one note, nothing after the request ------------
SCRIPTED = {"text/html": '<b>hi</b><script>alert(1)</script><img src="x" onerror="alert(2)">',
            "application/javascript": "alert(3)", "text/plain": "hi"}


async def test_every_bundle_is_cleaned_and_one_note_is_shown() -> None:
    published = Published()
    relay = Relay(published)
    for kind in ("display_data", "execute_result", "update_display_data"):
        relay.event({"type": kind, "data": dict(SCRIPTED), "metadata": {}})
    relay.flush()
    bundles = [content["data"] for kind, content, _, _ in published if kind != "stream"]
    assert len(bundles) == 3
    for bundle in bundles:
        assert set(bundle) == {"text/html", "text/plain"}
        assert "<b>hi</b>" in bundle["text/html"]
        assert "script" not in bundle["text/html"] and "onerror" not in bundle["text/html"]
    notes = [content["text"] for kind, content, _, _ in published if kind == "stream"]
    assert len(notes) == 1 and "removed active content" in notes[0]
    assert published[1][0] == "stream"  # the note follows the output it is about
    assert "application/javascript dropped" in relay.audit_fields()["output_removed"]


async def test_an_output_with_nothing_left_is_not_shown() -> None:
    published = Published()
    relay = Relay(published)
    relay.event({"type": "display_data", "data": {"application/javascript": "x"}})
    relay.event({"type": "display_data", "data": "not a bundle"})
    relay.flush()
    assert [kind for kind, *_ in published] == ["stream"]


async def test_an_administrator_may_allow_scripts() -> None:
    published = Published()
    relay = Relay(published, policy=OutputPolicy(allow_scripts=True))
    relay.event({"type": "display_data", "data": dict(SCRIPTED), "metadata": {}})
    assert published == [("display_data", {"data": SCRIPTED, "metadata": {}}, None, None)]
    assert relay.audit_fields() == {}


async def test_error_outputs_are_plain_strings() -> None:
    published = Published()
    relay = Relay(published)
    relay.event({"type": "error", "ename": {"x": 1}, "evalue": 3, "traceback": [1, "a"],
                 "extra": "<script>"})
    assert published == [("error", {"ename": "{'x': 1}", "evalue": "3",
                                     "traceback": ["1", "a"]}, None, None)]


async def test_reply_fields_keep_only_ipykernel_payloads_cleaned_and_within_room() -> None:
    relay = Relay(Published())
    values = {"payload": [{"source": "page", "data": dict(SCRIPTED), "start": 0},
                          {"source": "set_next_input", "text": "x", "replace": False},
                          {"source": "evil"}, "junk"],
              "user_expressions": {"a": {"status": "ok", "data": dict(SCRIPTED)}}}
    fields = relay.reply_fields(values, room=10_000)
    assert [p["source"] for p in fields["payload"]] == ["page", "set_next_input"]
    assert "script" not in fields["payload"][0]["data"]["text/html"]
    assert "application/javascript" not in fields["user_expressions"]["a"]["data"]
    assert relay.reply_fields(values, room=100) == {"payload": [], "user_expressions": {}}
    assert any("over max_output_bytes" in r for r in relay.removed)


async def test_nothing_is_published_once_the_request_is_over() -> None:
    published = Published()
    relay = Relay(published)
    relay.close()
    relay.event({"type": "display_data", "data": {"text/plain": "late"}})
    relay.error("E", "late", [])
    assert published == []


async def test_widget_state_rendered_as_html_is_cleaned() -> None:
    published = Published()
    models = {"c1": "HTMLModel"}
    relay = Relay(published, model_of=models.get)
    relay.event({"type": "comm_open", "content": {"comm_id": "c2", "target_name": "w", "data": {
        "state": {"_model_name": "HTMLModel", "value": "<b>x</b><img src=x onerror=alert(1)>",
                  "description": "<i>d</i>", "description_allow_html": True}}}})
    relay.event({"type": "comm_msg", "content": {"comm_id": "c1", "data": {
        "method": "update", "state": {"value": "<script>alert(2)</script>ok"}}}})
    relay.event({"type": "comm_msg", "content": {"comm_id": "c3", "data": {
        "method": "update", "state": {"outputs": [{"output_type": "display_data", "data": {
            "application/javascript": "alert(3)", "text/plain": "p"}}]}}}})
    relay.event({"type": "comm_msg", "content": {"comm_id": "c4", "data": {
        "method": "update", "state": {"value": "<b>a text widget</b>"}}}})
    states = [c["data"]["state"] for kind, c, _, _ in published if kind.startswith("comm")]
    assert "onerror" not in states[0]["value"] and "<b>x</b>" in states[0]["value"]
    assert states[0]["description_allow_html"] is False
    assert states[1]["value"] == "ok"
    assert states[2]["outputs"][0]["data"] == {"text/plain": "p"}
    assert states[3]["value"] == "<b>a text widget</b>"  # not an HTML model: text, untouched
    assert [kind for kind, *_ in published].count("stream") == 1
