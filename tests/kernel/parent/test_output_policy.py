"""The output policy: nothing a cell displays can run script in the user's browser."""

from __future__ import annotations

import pytest

from agenticraft_kernel.parent.output_policy import OutputPolicy, note

POLICY = OutputPolicy()

HOSTILE_HTML = [
    "<script>window.pwned = 1</script><b>hi</b>",
    '<img src="x" onerror="window.pwned = 1">',
    '<a href="javascript:window.pwned = 1">click</a>',
    '<a href=" JaVaScRiPt:window.pwned = 1">click</a>',
    '<iframe src="https://example.org"></iframe>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0; url=javascript:alert(1)">',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<svg><script>window.pwned = 1</script></svg>',
    '<div onmouseover="window.pwned = 1">x</div>',
    '<form action="javascript:alert(1)"><input type="submit"></form>',
]


@pytest.mark.parametrize("html", HOSTILE_HTML)
def test_hostile_html_is_defused(html: str) -> None:
    kept, removed = POLICY.clean_bundle({"text/html": html, "text/plain": "x"})
    cleaned = kept["text/html"].lower()
    for active in ("<script", "onerror", "onmouseover", "javascript:", "<iframe", "<object",
                   "<embed", "<base", "<meta", "data:text/html", "<form"):
        assert active not in cleaned
    assert removed and kept["text/plain"] == "x"


def test_script_mimetypes_are_dropped() -> None:
    kept, removed = POLICY.clean_bundle({"application/javascript": "alert(1)",
                                         "application/vnd.bokehjs_exec.v0+json": {},
                                         "text/plain": "<IPython.core.display.Javascript>"})
    assert kept == {"text/plain": "<IPython.core.display.Javascript>"}
    assert len(removed) == 2


def test_unknown_mimetypes_are_dropped_known_inert_ones_kept() -> None:
    bundle = {"application/x-unknown-renderer": "x", "image/png": "iVBORw0KGgo=",
              "application/json": {"a": 1}, "application/vnd.vegalite.v5+json": {"mark": "bar"},
              "application/vnd.jupyter.widget-view+json": {"model_id": "m"},
              "text/latex": "$x$", "application/vnd.plotly.v1+json": {"data": []}}
    kept, removed = POLICY.clean_bundle(bundle)
    assert "application/x-unknown-renderer" not in kept
    assert {k: v for k, v in bundle.items() if k != "application/x-unknown-renderer"} == kept
    assert removed == ["application/x-unknown-renderer dropped (not known to be free of page "
                       "script)"]


def test_ordinary_html_survives() -> None:
    table = ('<div><style scoped>.dataframe tbody tr th { vertical-align: top; }</style>'
             '<table border="1" class="dataframe"><thead><tr style="text-align: right;">'
             '<th></th><th>a</th></tr></thead><tbody><tr><th>0</th><td>1</td></tr></tbody>'
             '</table></div>')
    kept, removed = POLICY.clean_bundle({"text/html": table})
    assert removed == []
    for part in ('class="dataframe"', "<th>a</th>", "<td>1</td>", "vertical-align: top",
                 'style="text-align: right;"'):
        assert part in kept["text/html"]
    img = '<img src="data:image/png;base64,iVBORw0KGgo=" alt="plot">'
    kept, removed = POLICY.clean_bundle({"text/html": img})
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in kept["text/html"] and removed == []


def test_svg_keeps_drawing_loses_script() -> None:
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
           'viewBox="0 0 10 10"><defs><path id="m" d="M 0 0 L 3 0"/></defs>'
           '<use xlink:href="#m" x="1" y="1"/><circle cx="5" cy="5" r="4" onload="alert(1)"/>'
           '<script>alert(2)</script><a xlink:href="javascript:alert(3)"><text>t</text></a>'
           '<foreignObject><iframe src="x"></iframe></foreignObject></svg>')
    kept, removed = POLICY.clean_bundle({"image/svg+xml": svg})
    out = kept["image/svg+xml"]
    assert 'viewBox="0 0 10 10"' in out and 'xlink:href="#m"' in out and "<circle" in out
    assert 'xmlns:xlink="http://www.w3.org/1999/xlink"' in out
    for active in ("onload", "<script", "javascript:", "foreignobject", "<iframe"):
        assert active not in out.lower()
    assert removed == ["active content removed from image/svg+xml"]


def test_markdown_links_and_raw_html() -> None:
    md = "# Title\n\n[click](javascript:alert(1)) and <img src=x onerror=alert(2)> **bold**"
    kept, removed = POLICY.clean_bundle({"text/markdown": md})
    out = kept["text/markdown"]
    assert "javascript:" not in out and "onerror" not in out
    assert "# Title" in out and "**bold**" in out and removed


def test_scripts_allowed_by_the_administrator() -> None:
    bundle = {"application/javascript": "alert(1)", "text/html": "<script>x()</script>"}
    assert OutputPolicy(allow_scripts=True).clean_bundle(bundle) == (bundle, [])


def test_note_names_what_was_removed_and_how_to_change_it() -> None:
    line = note(["application/javascript dropped", "application/javascript dropped"])
    assert line.count("application/javascript dropped") == 1
    assert "allow_output_scripts" in line and line.endswith("\n")
