"""ResearchTeam: a researcher and a writer that produce a cited report, offline by default.

1. **gather** - the researcher collects sources through its tools: text documents given to the
   team, files (``pathlib.Path`` or ``{"path": ...}``) read with ``read_file`` (needs
   ``filesystem_access``), and ``web_search`` results when the resolved context allows
   ``network_access`` *and* a search backend is configured.
2. **summarize** - an extractive summarizer runs *inside the process sandbox* over the
   sources (untrusted web text is never processed by the host beyond JSON parsing) and returns
   the sentences that best cover the topic, each tied to its source.
3. **write** - with a model provider (a callable, or an OpenAI-compatible endpoint via
   ``provider=`` or ``AGENTICRAFT_PROVIDER_URL``) the writer turns the sources into prose that
   cites them as ``[n]``; without one the report is the extractive findings, each cited.

Strings in ``documents`` are document *text*, never file names: pass ``pathlib.Path`` objects
(or ``{"path": ...}``) for files, so that text is never mistaken for a path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agenticraft.agents.agent import Agent, ModelProvider, as_provider, provider_from_env
from agenticraft.agents.auth import Authenticator
from agenticraft.agents.tools.base import FunctionTool
from agenticraft.agents.tools.builtin import SearchBackend, WebSearchBackend, WebSearchTool
from agenticraft.agents.workflows.base import StepRecord, Workflow, WorkflowRun
from agenticraft.sandbox.manager import SandboxManager
from agenticraft.wire.errors import ConfigurationError, PermissionDenied

__all__ = ["Finding", "ResearchReport", "ResearchTeam", "Source", "extractive_findings"]

MAX_SOURCE_CHARS = 100_000


@dataclasses.dataclass(frozen=True)
class Source:
    """A numbered source; the report cites it as ``[index]``."""

    index: int
    title: str
    origin: str  # "document 2", a file path or a URL
    text: str

    def citation(self) -> str:
        return f"[{self.index}] {self.title} ({self.origin})" if self.origin != self.title \
            else f"[{self.index}] {self.title}"


@dataclasses.dataclass(frozen=True)
class Finding:
    text: str
    source: int
    score: float = 0.0


@dataclasses.dataclass
class ResearchReport:
    """The team's report. ``content`` is None (and ``withheld_reason`` set) when the caller
    lacks ``read_results``; then ``sources``, ``findings`` and ``notes`` are empty too."""

    topic: str
    user_id: str
    content: str | None
    sources: list[Source] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    method: str | None = None  # "extractive" | "model"
    notes: list[str] = dataclasses.field(default_factory=list)
    steps: list[StepRecord] = dataclasses.field(default_factory=list)
    withheld_reason: str | None = None

    @property
    def returned(self) -> bool:
        return self.withheld_reason is None

    @property
    def citations(self) -> list[int]:
        """Source numbers cited in the content, in order of first appearance."""
        seen: list[int] = []
        for match in re.finditer(r"\[(\d+)\]", self.content or ""):
            number = int(match.group(1))
            if number not in seen:
                seen.append(number)
        return seen

    def __str__(self) -> str:
        return self.content if self.content is not None else (
            f"[report withheld: {self.withheld_reason}]")


def extractive_findings(topic: str, sources: list, max_findings: int = 8) -> list:
    """The sentences of ``sources`` that best cover ``topic``, each with its source number.

    Runs inside the sandbox, so it is self-contained (imports inside, data in, data out).
    """
    import math
    import re

    stop = {"the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her",
            "was", "one", "our", "out", "has", "have", "his", "how", "its", "may", "new", "now",
            "see", "who", "did", "get", "use", "that", "with", "this", "from", "they", "will",
            "would", "there", "their", "what", "about", "which", "when", "were", "been", "than",
            "into", "more", "also", "such", "some", "these", "those", "them", "then", "only",
            "other", "over", "most", "very", "each", "does", "just", "like", "should", "could"}

    def words(text):
        return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in stop]

    topic_terms = set(words(topic))
    candidates = []
    frequency = {}
    for number, source in enumerate(sources, 1):
        text = " ".join(str(source.get("text", "")).split())
        for position, sentence in enumerate(re.split(r"(?<=[.!?])\s+", text)):
            sentence = sentence.strip()
            terms = words(sentence)
            if len(sentence) < 20 or len(terms) < 3:
                continue
            candidates.append((number, position, sentence, terms))
            for term in terms:
                frequency[term] = frequency.get(term, 0) + 1
    if not candidates:
        return []
    top = math.log(1 + max(frequency.values()))
    scored = []
    for number, position, sentence, terms in candidates:
        unique = set(terms)
        topical = len(unique & topic_terms) / max(1, len(topic_terms))
        central = sum(math.log(1 + frequency[t]) for t in unique) / (len(unique) * top)
        score = 3.0 * topical + central + 0.3 / (1 + position)
        scored.append((score, number, position, sentence, unique))
    scored.sort(key=lambda item: (-item[0], item[1], item[2]))
    if topic_terms and any(unique & topic_terms for *_, unique in scored):
        scored = [item for item in scored if item[4] & topic_terms]  # on-topic sentences only
    else:
        max_findings = max(1, min(max_findings, len(sources) * 2))

    chosen = []
    covered = set()

    def similar(a, b):
        return len(a & b) / max(1, len(a | b)) > 0.6

    for first_pass in (True, False):  # the best sentence of each source first, then the rest
        for score, number, position, sentence, unique in scored:
            if len(chosen) >= max_findings:
                break
            if first_pass and number in covered:
                continue
            if any(sentence == c[3] or similar(unique, c[4]) for c in chosen):
                continue
            chosen.append((score, number, position, sentence, unique))
            covered.add(number)
    chosen.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [{"text": c[3], "source": c[1], "score": round(c[0], 4)} for c in chosen]


class ResearchTeam(Workflow):
    """``await ResearchTeam().research(topic=..., user_context=...)`` -> :class:`ResearchReport`.

    ``run(task=..., user_context=...)`` is the same as ``research(topic=task, ...)``.
    """

    def __init__(self, documents: Iterable[Any] = (), *,
                 provider: ModelProvider | Any = None,
                 search_backend: SearchBackend | None = None, max_sources: int = 8,
                 max_findings: int = 8, manager: SandboxManager | None = None,
                 authenticator: Authenticator | None = None, name: str = "research_team",
                 memory_limit: int | None = None, cpu_limit: float | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(name, manager=manager, authenticator=authenticator,
                         memory_limit=memory_limit, cpu_limit=cpu_limit, timeout=timeout)
        self.documents = list(documents)
        self.search_backend = search_backend
        self.max_sources = max_sources
        self.max_findings = max_findings
        summarize = FunctionTool(extractive_findings, name="summarize",
                                 description="Extract the key sentences of the sources.")
        self.researcher = Agent("researcher", manager=manager, tools=[summarize],
                                search_backend=search_backend)
        self.writer = Agent("writer", manager=manager,
                            provider=None if provider is None else as_provider(provider))
        self.tools = self.researcher.tools

    async def research(self, topic: str, user_context: Any = None,
                       documents: Iterable[Any] | None = None) -> ResearchReport:
        """Gather, summarize and write a cited report on ``topic``."""
        return await self.arun(topic, user_context, documents=list(documents or ()))

    # -- the steps --------------------------------------------------------------------------
    async def execute(self, run: WorkflowRun) -> tuple[Any, str | None]:
        topic = run.task
        notes: list[str] = []
        sources = await self._gather(run, notes)
        findings: list[Finding] = []
        if sources:
            result = await run.tool("summarize", "summarize", topic=topic,
                                    sources=[{"title": s.title, "text": s.text} for s in sources],
                                    max_findings=self.max_findings)
            if not result.success:
                return None, f"summarize failed: {result.error}"
            findings = [Finding(str(f["text"]), int(f["source"]), float(f.get("score", 0)))
                        for f in result["result"] if isinstance(f, dict)
                        and 1 <= int(f.get("source", 0)) <= len(sources)]
        content, method = await self._write(run, topic, sources, findings, notes)
        return (content, sources, findings, method, notes), None

    async def _gather(self, run: WorkflowRun, notes: list[str]) -> list[Source]:
        started = time.perf_counter()
        sources: list[Source] = []
        documents = [*self.documents, *run.options.get("documents", ())]
        for number, document in enumerate(documents, 1):
            if len(sources) >= self.max_sources:
                notes.append(f"only the first {self.max_sources} sources were used")
                break
            title, text, path = _document(document, number)
            if path is not None:
                try:
                    result = await run.tool(f"read_file_{number}", "read_file", path=str(path))
                except PermissionDenied as exc:
                    notes.append(f"{path} was not read: {exc}")
                    continue
                if not result.success:
                    notes.append(f"{path} could not be read: {result.error}")
                    continue
                text = str(result["result"])
            sources.append(Source(len(sources) + 1, title, str(path) if path else
                                  f"document {number}", text[:MAX_SOURCE_CHARS]))
        backend = self.search_backend or WebSearchBackend.from_env()
        if backend is None:
            notes.append("web search not used: no search backend is configured")
        elif not run.allows("network_access"):
            notes.append("web search not used: the context does not allow network_access")
        elif len(sources) < self.max_sources:
            tool = WebSearchTool(backend)
            result = await run.tool("web_search", tool, query=run.task,
                                    max_results=self.max_sources - len(sources))
            if result.success:
                for item in result["result"]:
                    text = item["snippet"] or item["title"]
                    sources.append(Source(len(sources) + 1, item["title"] or item["url"],
                                          item["url"] or "web search", text[:MAX_SOURCE_CHARS]))
            else:
                notes.append(f"web search failed: {result.error}")
        run.record_step("gather", "gather", "ok", started, sources=len(sources))
        return sources

    async def _write(self, run: WorkflowRun, topic: str, sources: list[Source],
                     findings: list[Finding], notes: list[str]) -> tuple[str, str]:
        provider = self.writer.provider or provider_from_env()
        if not sources:
            reasons = "; ".join(notes) or "no documents were given"
            return (f"# Research report: {topic}\n\nNo sources were available, so this report has "
                    f"no findings ({reasons}). Give the team documents "
                    "(ResearchTeam(documents=[...]) or research(..., documents=[...])), or allow "
                    "network_access with a search backend configured.\n"), "extractive"
        source_list = "\n".join(s.citation() for s in sources)
        if provider is None:
            lines = [f"# Research report: {topic}", "", "## Key findings", ""]
            lines += [f"- {f.text} [{f.source}]" for f in findings]
            lines += ["", "## Sources", "", source_list, ""]
            return "\n".join(lines), "extractive"
        started = time.perf_counter()
        numbered = "\n\n".join(f"[{s.index}] {s.title} ({s.origin}):\n{s.text[:3000]}"
                               for s in sources)
        key = "\n".join(f"- {f.text} [{f.source}]" for f in findings)
        messages = [
            {"role": "system", "content": (
                "You are a careful research writer. Write a concise report on the topic using "
                "ONLY the numbered sources given. Cite every claim with its source number in "
                "square brackets, like [1]. Do not invent sources.")},
            {"role": "user", "content": f"Topic: {topic}\n\nSources:\n{numbered}\n\n"
                                        f"Key sentences:\n{key}"},
        ]
        try:
            reply = await provider.complete(messages)
        except Exception as exc:
            run.record_step("write", "model", "error", started, reason=f"{type(exc).__name__}")
            raise
        text = reply.content.strip()
        valid = {s.index for s in sources}
        bad = sorted({int(n) for n in re.findall(r"\[(\d+)\]", text)} - valid)
        if bad:
            notes.append(f"the model cited unknown sources {bad}")
        run.record_step("write", "model", "ok", started)
        return f"{text}\n\n## Sources\n\n{source_list}\n", "model"

    def package(self, run: WorkflowRun, output: Any, error: str | None,
                withheld: str | None) -> ResearchReport:
        user = run.context.user_id
        if withheld is not None:
            return ResearchReport(run.task, user, None, steps=list(run.records),
                                  withheld_reason=withheld)
        if error is not None or output is None:
            raise ConfigurationError(f"ResearchTeam failed: {error}")
        content, sources, findings, method, notes = output
        return ResearchReport(run.task, user, content, list(sources), list(findings), method,
                              list(notes), list(run.records))


def _document(document: Any, number: int) -> tuple[str, str, Path | None]:
    """(title, text, path) of one given document."""
    if isinstance(document, os.PathLike):
        path = Path(document)
        return path.name, "", path
    if isinstance(document, str):
        lines = document.strip().splitlines()
        first = lines[0].strip() if lines else ""
        if len(lines) > 1 and 0 < len(first) <= 80 and not first.endswith((".", "!", "?")):
            return first, "\n".join(lines[1:]), None  # a title line, then the text
        return f"Document {number}", document, None
    if isinstance(document, Mapping):
        if "path" in document:
            path = Path(document["path"])
            return str(document.get("title") or path.name), "", path
        if "text" in document:
            return (str(document.get("title") or f"Document {number}"), str(document["text"]),
                    None)
    raise ConfigurationError(
        f"document {number} must be text (str), a pathlib.Path, or a dict with 'text' or "
        f"'path', not {type(document).__name__}")
