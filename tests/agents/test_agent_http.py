"""The agent API's HTTP clients (an OpenAI-compatible provider, the web search backend) against
the loopback servers of ``http_helpers`` (fixtures ``search_server`` and ``chat_server``)."""

from __future__ import annotations

import pytest

from agenticraft.agents.agent import (
    ModelReply,
    OpenAICompatibleProvider,
    ProviderError,
    provider_from_env,
)
from agenticraft.agents.tools import WebSearchBackend
from agenticraft.agents.tools.builtin import SEARCH_URL_ENV

pytestmark = pytest.mark.usefixtures("isolated_agent_state")


async def test_openai_compatible_provider_posts_messages_and_tools(chat_server):
    provider = OpenAICompatibleProvider(chat_server.url + "/v1", "fake-model", api_key="k-123")
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {}}}]
    reply = await provider.complete([{"role": "user", "content": "Calculate 2+2"}], tools)
    assert "```python" in reply.content
    sent = chat_server.requests[-1]
    assert sent["body"]["model"] == "fake-model"
    assert sent["body"]["tools"] == tools
    assert sent["headers"]["Authorization"] == "Bearer k-123"


async def test_openai_provider_reports_http_errors(search_server):
    provider = OpenAICompatibleProvider(search_server.url, "m")  # /chat/completions -> 404
    with pytest.raises(ProviderError, match="HTTP 404"):
        await provider.complete([{"role": "user", "content": "hi"}])


def test_model_reply_parses_openai_tool_calls():
    reply = ModelReply.from_value({"content": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "calculator", "arguments": "{\"expression\": \"1+1\"}"}}]})
    assert reply.tool_calls[0].name == "calculator"
    assert reply.tool_calls[0].arguments == {"expression": "1+1"}
    assert reply.tool_calls[0].id == "c1"
    with pytest.raises(ProviderError, match="not JSON"):
        ModelReply.from_value({"tool_calls": [{"function": {"name": "x", "arguments": "{"}}]})


def test_provider_from_env_needs_a_model():
    assert provider_from_env({}) is None
    provider = provider_from_env({"AGENTICRAFT_PROVIDER_URL": "http://127.0.0.1:1/v1",
                                  "AGENTICRAFT_PROVIDER_MODEL": "m"})
    assert isinstance(provider, OpenAICompatibleProvider) and provider.model == "m"
    with pytest.raises(Exception, match="AGENTICRAFT_PROVIDER_MODEL"):
        provider_from_env({"AGENTICRAFT_PROVIDER_URL": "http://127.0.0.1:1/v1"})


def test_web_search_backend_from_env_and_validation():
    assert WebSearchBackend.from_env({}) is None
    backend = WebSearchBackend.from_env({SEARCH_URL_ENV: "http://127.0.0.1:9/"})
    assert backend is not None and backend.base_url == "http://127.0.0.1:9"
    with pytest.raises(Exception, match="http"):
        WebSearchBackend("file:///etc/passwd")
