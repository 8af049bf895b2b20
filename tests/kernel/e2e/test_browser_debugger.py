"""JupyterLab's visual debugger on the secure kernel, in headless Chromium: the debugger toggle
is enabled (the kernel advertises ``debugger``), a breakpoint set in the cell's gutter stops the
cell, the Variables panel shows the function's local variables with their values, the call
stack names the function, and after "Continue" the cell completes with its output. The debugger
runs inside the sandbox (see ``agenticraft_kernel.worker.debugger``). Skipped only when Chromium,
Playwright or JupyterLab is not installed (the same conditions as the other browser tests)."""

from __future__ import annotations

from pathlib import Path

from kernel.e2e.test_browser_jupyterlab import ARGS, CHROMIUM, playwright_api, running_lab

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CELL = "def add(a, b):\n    total = a + b\n    return total\n\nprint('sum', add(20, 22))"
BREAK_LINE = 3  # "return total": a, b and total are all bound


def test_breakpoint_and_variables_in_the_jupyterlab_debugger(data_dir: Path,
                                                            tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with running_lab(data_dir, tmp_path, [CELL], timeout_seconds=120, memory_mb=512) as (
            url, _tmp), playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        try:
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell")
            page.wait_for_selector(".jp-KernelName:has-text('AgentiCraft Secure')")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            toggle = page.locator(".jp-DebuggerBugButton").first
            page.wait_for_function(  # enabled once the kernel answered the debugger's debugInfo
                "() => { const b = document.querySelector('.jp-DebuggerBugButton');"
                " return b && !b.hasAttribute('disabled')"
                " && b.getAttribute('aria-disabled') !== 'true'; }")
            toggle.click()
            page.wait_for_selector(".jp-DebuggerBugButton[aria-pressed='true']")
            page.wait_for_selector(".jp-DebuggerVariables")
            cell = page.locator(".jp-Notebook .jp-CodeCell").first
            number = cell.locator(f".cm-lineNumbers .cm-gutterElement:text-is('{BREAK_LINE}')")
            gutter = cell.locator(".cm-gutter.cm-breakpoint-gutter")
            line_box, gutter_box = number.bounding_box(), gutter.bounding_box()
            assert line_box is not None and gutter_box is not None
            page.mouse.click(gutter_box["x"] + gutter_box["width"] / 2,
                             line_box["y"] + line_box["height"] / 2)
            page.wait_for_selector(f".jp-DebuggerBreakpoint-line:text-is('{BREAK_LINE}')")
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            variables = page.locator(".jp-DebuggerVariables")
            page.wait_for_function(
                "() => { const v = document.querySelector('.jp-DebuggerVariables');"
                " return v && v.innerText.includes('total') && v.innerText.includes('42'); }")
            page.screenshot(path=str(ARTIFACTS / "debugger-stopped.png"))
            shown = variables.inner_text()
            assert "a" in shown and "20" in shown and "22" in shown, shown
            frame = page.locator(".jp-DebuggerCallstackFrame.selected")
            assert frame.locator(".jp-DebuggerCallstackFrame-name").inner_text() == "add"
            assert frame.locator(".jp-DebuggerCallstackFrame-location").inner_text().endswith(
                f":{BREAK_LINE}")
            assert "sum 42" not in cell.inner_text()  # the cell is held at the breakpoint
            page.locator("[title^='Continue'] >> visible=true").first.click()
            page.wait_for_selector(".jp-OutputArea-output:has-text('sum 42')")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        finally:
            page.screenshot(path=str(ARTIFACTS / "debugger-final.png"))
            browser.close()
