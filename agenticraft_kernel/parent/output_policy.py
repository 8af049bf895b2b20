"""Parent side: what of a cell's rich output may reach the user's browser.

Threat: JupyterLab renders a freshly produced output as trusted, in the page that holds the
user's server token. A ``<script>`` (or an ``onerror=`` handler, a ``javascript:`` link, an
iframe) in a cell's HTML runs as the user: it can start an unsandboxed kernel through the REST
API. For a kernel whose cells are untrusted, anything that executes in the page is an escape.

Every bundle the worker produces passes :meth:`OutputPolicy.clean_bundle` before IOPub:

- script mimetypes (``application/javascript`` and kin) are dropped;
- ``text/html``, ``text/markdown`` and ``image/svg+xml`` are sanitised with nh3 (the binding of
  Rust's ammonia): no script or style-less active content, no event-handler attributes, no
  ``javascript:``/``data:text/html`` URLs, no iframes/objects/embeds, no ``<base>``/``<meta>``;
- mimetypes known to render without running page scripts (images, JSON, LaTeX, widget views,
  plotly/vega specs) pass unchanged; anything else is dropped, because an unknown renderer may
  execute code (Bokeh's exec mimetype does).

An administrator may allow scripts for trusted deployments (``allow_scripts``). What was removed
is returned so the kernel can show a one-line note per cell and write it into the cell's audit
record.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import nh3

#: Mimetypes that carry executable page script: never forwarded unless scripts are allowed.
SCRIPT_MIMETYPES = frozenset({
    "application/javascript", "text/javascript", "application/x-javascript",
    "application/ecmascript", "text/ecmascript", "application/vnd.bokehjs_exec.v0+json",
    "application/vnd.bokehjs_load.v0+json", "application/vnd.holoviews_exec.v0+json",
    "application/vnd.holoviews_load.v0+json",
})
#: Mimetypes rendered as data (no page script of their own): forwarded as they are.
INERT_MIMETYPES = frozenset({
    "text/plain", "text/latex", "text/csv", "text/x-python",
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
    "application/json", "application/pdf", "application/geo+json",
    "application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json",
    "application/vnd.plotly.v1+json", "application/vnd.dataresource+json",
    "application/vnd.jupyter.stderr", "application/vnd.jupyter.stdout",
})
_VEGA = re.compile(r"^application/vnd\.vega(lite)?\.v\d+(\.\d+)*\+json$")
SANITISED_MIMETYPES = ("text/html", "text/markdown", "image/svg+xml")
#: ipywidgets models whose ``value`` the browser renders as HTML.
HTML_WIDGET_MODELS = frozenset({"HTMLModel", "HTMLMathModel"})

_HTML_TAGS = frozenset(nh3.ALLOWED_TAGS | {"style", "tfoot", "th", "font", "input", "label",
                                          "progress", "meter", "section", "main", "svg"})
_SVG_TAGS = frozenset({
    "svg", "g", "path", "circle", "rect", "line", "polyline", "polygon", "ellipse", "text",
    "tspan", "textPath", "defs", "use", "symbol", "marker", "clipPath", "mask", "pattern",
    "linearGradient", "radialGradient", "stop", "title", "desc", "style", "image", "a",
    "metadata", "switch", "filter", "feGaussianBlur", "feOffset", "feBlend", "feColorMatrix",
    "feFlood", "feComposite", "feMerge", "feMergeNode",
})
#: Presentation attributes only: nothing here can hold script (``on*`` are never listed).
_COMMON_ATTRIBUTES = frozenset({
    "id", "class", "style", "title", "lang", "dir", "width", "height", "align", "valign",
    "border", "cellpadding", "cellspacing", "colspan", "rowspan", "scope", "headers", "span",
    "start", "type", "value", "checked", "disabled", "min", "max", "color", "bgcolor",
    "scoped",  # <style scoped> in pandas' DataFrame HTML
})
_SVG_ATTRIBUTES = frozenset({
    "xmlns", "xmlns:xlink", "version", "viewBox", "preserveAspectRatio", "transform", "d",
    "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "rx", "ry", "dx", "dy", "points",
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity",
    "stroke-linecap", "stroke-linejoin", "stroke-dasharray", "stroke-dashoffset",
    "stroke-miterlimit", "opacity", "clip-path", "clip-rule", "clipPathUnits", "mask",
    "font-family", "font-size", "font-weight", "font-style", "text-anchor",
    "dominant-baseline", "alignment-baseline", "letter-spacing", "offset", "stop-color",
    "stop-opacity", "gradientUnits", "gradientTransform", "patternUnits", "markerWidth",
    "markerHeight", "refX", "refY", "orient", "markerUnits", "href", "xlink:href",
    "stdDeviation", "in", "in2", "result", "mode", "values", "operator", "flood-color",
    "flood-opacity", "visibility", "display", "overflow", "vector-effect", "shape-rendering",
    "image-rendering", "text-rendering", "filter",
})
_URL_SCHEMES = frozenset({"http", "https", "mailto", "data"})
_SAFE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp|bmp);", re.IGNORECASE)
_URL_ATTRIBUTES = frozenset({"href", "xlink:href", "src", "cite", "action", "background"})


def _keep_url(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: data: URLs only for raster images; in-document SVG references."""
    if attribute not in _URL_ATTRIBUTES:
        return value
    stripped = value.strip()
    if stripped.lower().startswith("data:"):
        return value if _SAFE_DATA_URL.match(stripped) else None
    return value


def _attributes(tags: frozenset[str], names: frozenset[str]) -> dict[str, set[str]]:
    return {tag: set(names) for tag in tags} | {"a": set(names) | {"href", "target"},
                                                "img": set(names) | {"src", "alt"}}


_HTML_ATTRIBUTES = _attributes(_HTML_TAGS | _SVG_TAGS, _COMMON_ATTRIBUTES | _SVG_ATTRIBUTES)
_SVG_ONLY_ATTRIBUTES = _attributes(_SVG_TAGS, _COMMON_ATTRIBUTES | _SVG_ATTRIBUTES)


def sanitise_html(html: str, *, svg_only: bool = False) -> str:
    """``html`` without anything that can run script (nh3/ammonia with our allow-lists)."""
    cleaned = nh3.clean(
        html,
        tags=set(_SVG_TAGS if svg_only else _HTML_TAGS | _SVG_TAGS),
        clean_content_tags={"script"},
        attributes=_SVG_ONLY_ATTRIBUTES if svg_only else _HTML_ATTRIBUTES,
        attribute_filter=_keep_url,
        url_schemes=set(_URL_SCHEMES),
        link_rel="noopener noreferrer",
    )
    if svg_only and "xlink:" in cleaned and "xmlns:xlink" not in cleaned:
        # The HTML serialiser drops namespace declarations; an <img>-rendered SVG needs it.
        cleaned = cleaned.replace(
            "<svg", '<svg xmlns:xlink="http://www.w3.org/1999/xlink"', 1)
    return cleaned


_MARKDOWN_LINK = re.compile(r"(\]\(\s*<?)(?:javascript|vbscript|data:text/html)[^)]*\)",
                            re.IGNORECASE)


def sanitise_markdown(text: str) -> str:
    """Raw HTML in markdown sanitised as HTML, and script URLs in markdown links removed."""
    return _MARKDOWN_LINK.sub(r"\1#)", sanitise_html(text))


@dataclasses.dataclass
class OutputPolicy:
    """Applied by the parent to every bundle before it reaches IOPub."""

    allow_scripts: bool = False

    def clean_bundle(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The bundle as it may reach the browser, and what was removed (for the note/audit)."""
        if self.allow_scripts:
            return dict(data), []
        kept: dict[str, Any] = {}
        removed: list[str] = []
        for mimetype, value in data.items():
            if mimetype in SCRIPT_MIMETYPES:
                removed.append(f"{mimetype} dropped")
            elif mimetype in SANITISED_MIMETYPES and isinstance(value, str):
                clean = self._sanitise(mimetype, value)
                if clean != value and _changed_meaningfully(value, clean):
                    removed.append(f"active content removed from {mimetype}")
                kept[mimetype] = clean
            elif mimetype in SANITISED_MIMETYPES:
                removed.append(f"{mimetype} dropped (not text)")
            elif mimetype in INERT_MIMETYPES or _VEGA.match(mimetype):
                kept[mimetype] = value
            else:
                removed.append(f"{mimetype} dropped (not known to be free of page script)")
        return kept, removed

    def clean_widget_state(self, state: Mapping[str, Any],
                           model: str | None) -> tuple[dict[str, Any], list[str]]:
        """A widget's state (a ``comm_open``/``comm_msg``) as it may reach the browser.

        ipywidgets renders some strings as HTML (``innerHTML``, where ``onerror=`` runs): the
        ``value`` of HTML models, descriptions with ``description_allow_html``, and the
        Output widget's ``outputs`` (mime bundles). Those are cleaned like outputs; HTML
        descriptions are turned off (they render as text)."""
        if self.allow_scripts:
            return dict(state), []
        kept = dict(state)
        removed: list[str] = []
        if model in HTML_WIDGET_MODELS and isinstance(kept.get("value"), str):
            clean = sanitise_html(kept["value"])
            if _changed_meaningfully(kept["value"], clean):
                removed.append(f"active content removed from a {model} widget")
            kept["value"] = clean
        if kept.get("description_allow_html"):
            kept["description_allow_html"] = False
            removed.append("HTML in a widget description shown as text")
        if isinstance(kept.get("outputs"), list):
            outputs = []
            for item in kept["outputs"]:
                if isinstance(item, Mapping) and "data" in item:
                    data, dropped = self.clean_bundle(item["data"] if isinstance(
                        item["data"], Mapping) else {})
                    item = {**item, "data": data}
                    removed.extend(dropped)
                outputs.append(item)
            kept["outputs"] = outputs
        return kept, removed

    @staticmethod
    def _sanitise(mimetype: str, value: str) -> str:
        if mimetype == "text/markdown":
            return sanitise_markdown(value)
        return sanitise_html(value, svg_only=mimetype == "image/svg+xml")


_ACTIVE = re.compile(r"<\s*(script|iframe|object|embed|base|meta|form|link)\b|\bon\w+\s*="
                     r"|javascript:|vbscript:|data:text/html", re.IGNORECASE)


def _changed_meaningfully(before: str, after: str) -> bool:
    """True when sanitising removed active content, not merely re-serialised the markup."""
    return len(_ACTIVE.findall(before)) > len(_ACTIVE.findall(after))


def note(removed: list[str]) -> str:
    """The one line shown under a cell whose output was cleaned."""
    what = "; ".join(dict.fromkeys(removed))
    return (f"AgentiCraft Secure removed active content from this cell's output ({what}). "
            "Outputs cannot run scripts in your browser; an administrator can allow them with "
            "[kernel] allow_output_scripts = true in the policy.\n")
