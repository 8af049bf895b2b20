"""Loopback HTTP servers for the agent, tool, workflow and specification tests: a search API and
an OpenAI-compatible chat endpoint, each answering JSON from a plain function."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class LoopbackServer:
    """An HTTP server on 127.0.0.1 in a thread; ``handle(method, path, body) -> (status, obj)``
    answers requests as JSON; every request is kept in ``requests``."""

    def __init__(self, handle: Callable[[str, str, Any], tuple[int, Any]]) -> None:
        self.handle = handle
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                server.requests.append({"method": method, "path": self.path, "body": body,
                                        "headers": dict(self.headers)})
                status, obj = server.handle(method, self.path, body)
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


SEARCH_RESULTS = [
    {"title": "AI safety primer", "url": "http://127.0.0.1/primer",
     "snippet": "AI safety research aims to make AI systems robust and aligned with human "
                "intent. Evaluations of AI safety test models before deployment."},
    {"title": "Python security guide", "url": "http://127.0.0.1/python",
     "snippet": "Python security depends on sandboxing untrusted code and auditing access."},
]


def search_handler(method: str, path: str, body: Any) -> tuple[int, Any]:
    parts = urlsplit(path)
    if parts.path != "/search":
        return 404, {"error": "not found"}
    query = parse_qs(parts.query)
    n = int(query.get("n", ["5"])[0])
    return 200, {"query": query.get("q", [""])[0], "results": SEARCH_RESULTS[:n]}


def arithmetic_chat(method: str, path: str, body: Any) -> tuple[int, Any]:
    """A fake model: asks the sandbox to compute, then answers with what came back."""
    if path != "/v1/chat/completions":
        return 404, {"error": "not found"}
    last = body["messages"][-1]
    if last["role"] == "user" and last["content"].startswith("Sandbox result"):
        match = re.search(r'"result": (-?\d+)', last["content"])
        content = f"The answer is {match.group(1)}." if match else "I could not compute it."
    else:
        content = "Let me compute it.\n```python\nresult = 2 + 2\n```"
    return 200, {"choices": [{"message": {"role": "assistant", "content": content}}]}


@contextlib.contextmanager
def serve(handle: Callable[[str, str, Any], tuple[int, Any]]) -> Iterator[LoopbackServer]:
    server = LoopbackServer(handle)
    try:
        yield server
    finally:
        server.close()
