"""report.html (pytest_infer/report/html.py): the folder's markdown pages in one file that loads nothing at
view time. The browser test makes a real report folder through the replay path (no engine: the tp8 kv-offload
files, as vLLM's and relabelled as SGLang's, like test_replay's two-engine test), writes the HTML, opens it in
Debian's headless Chromium through Playwright (scripts/install-browser.sh) and checks what a reader gets: no
console or page error, every image decoded, no request but the file itself, the matrix with its stacks; its
full-page screenshot is kept (PYTEST_INFER_SCREENSHOTS, default <tmp>/pytest-infer-shots/) to be
looked at. `.ci/run` installs the browser and sets PYTEST_INFER_REQUIRE_BROWSER, so a missing browser fails
there instead of skipping."""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from replaydata import kv_matrices, two_engines

from pytest_infer.report.html import page_files, write_html

pytest_plugins = ["pytester"]

OFFLOAD = Path(__file__).resolve().parent / "data" / "inferencex" / "b200-dsr1-fp4-vllm-kv-offload"
STACKS = ["b200-sglang-fp4@dsr1-agentic-tp8-ep8", "b200-vllm-fp4@dsr1-agentic-tp8-ep8",
          "b200-sglang-fp4+kvoffload@dsr1-agentic-tp8-ep8", "b200-vllm-fp4+kvoffload@dsr1-agentic-tp8-ep8"]


def _png(path: Path, width: int = 4, height: int = 3) -> Path:
    """A small real PNG (red), without an imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


# ---- write_html alone -------------------------------------------------------------------------------

def test_pages_in_order_suites_first(tmp_path: Path) -> None:
    for name in ("zeta.md", "trends.md", "compatibility-all.md", "smoke.md", "alpha.md", "compatibility.md",
                 "composability.md", "regression.md", "conformance.md"):
        (tmp_path / name).write_text(f"# {name[:-3]}\n\n## Part of {name[:-3]}\n\ntext\n")
    (tmp_path / "notes.txt").write_text("not a page")
    expected = ["composability", "conformance", "regression", "smoke", "compatibility", "compatibility-all",
                "trends", "alpha", "zeta"]
    assert [p.stem for p in page_files(tmp_path)] == expected
    text = write_html(tmp_path, "Report: cpu").read_text()
    sections = re.findall(r'<section class="page" id="page-([\w-]+)">', text)
    assert sections == expected
    toc = text.split('<nav class="toc">')[1].split("</nav>")[0]
    assert re.findall(r'href="#page-([\w-]+)"', toc) == expected
    assert 'href="#trends-part-of-trends"' in toc and 'id="trends-part-of-trends"' in text  # headings per page
    assert "notes.txt" not in text
    # a given order first, the rest by name
    assert [p.stem for p in page_files(tmp_path, ["trends.md", "nothere.md"])][:3] == ["trends", "alpha",
                                                                                        "compatibility"]


def test_missing_image_is_a_note_and_present_ones_are_inline(tmp_path: Path) -> None:
    _png(tmp_path / "composability-vllm.png")
    (tmp_path / "composability.md").write_text(
        "# Composability matrix: cpu\n\n"
        "| stack | verdict | details |\n|---|---|---|\n"
        "| `cpu-vllm-fp4+mtp` | PASS | a \\| b <script>alert(1)</script> |\n"
        "| `cpu-vllm-disagg\\|x` | FAIL | see [trends](trends.md) |\n\n"
        "![composability-vllm](composability-vllm.png)\n\n![gone](composability-sglang.png)\n\n"
        "![remote](http://example.invalid/x.png)\n")
    (tmp_path / "trends.md").write_text("# Trends\n\n![trend](trend-throughput.png)\n")
    out = write_html(tmp_path, "Report <cpu>")
    assert out == tmp_path / "report.html"
    text = out.read_text()
    assert "<title>Report &lt;cpu&gt;</title>" in text
    assert '<span class="missing">⚠ image not found: composability-sglang.png (gone)</span>' in text
    assert '<span class="missing">⚠ image not found: trend-throughput.png</span>'  # alt in the name: once in text
    assert "⚠ image not inlined (not a local file): http://example.invalid/x.png" in text
    (src,) = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert src.startswith("data:image/png;base64,iVBORw0KGgo")
    assert "<code>cpu-vllm-fp4+mtp</code>" in text and "<code>cpu-vllm-disagg|x</code>" in text
    assert "a | b &lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script" not in text  # raw HTML is text
    assert '<a href="#page-trends">trends</a>' in text  # a link to a sibling page stays in the file
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from anywhere


def test_empty_folder_still_writes_a_page(tmp_path: Path) -> None:
    assert "No markdown pages in this folder." in write_html(tmp_path, "Empty").read_text()


# ---- in a real browser -------------------------------------------------------------------------------

def _chromium() -> str:
    """Debian's Chromium binary (not its shell launcher) and Playwright, or a skip (a failure in CI)."""
    required = bool(os.environ.get("PYTEST_INFER_REQUIRE_BROWSER"))
    given = os.environ.get("PYTEST_INFER_CHROMIUM")
    candidates = [given] if given else ["/usr/lib/chromium/chromium", shutil.which("chromium")]
    found = next((p for p in candidates if p and Path(p).is_file()), None)
    reason = ""
    if found is None:
        reason = (f"PYTEST_INFER_CHROMIUM={given} is not a file" if given
                  else "Chromium is not installed (scripts/install-browser.sh)")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (scripts/install-browser.sh, or the dev extra)"
    if reason:
        if required:
            pytest.fail(f"PYTEST_INFER_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    assert found is not None
    return found


def _replayed_report(pytester: pytest.Pytester) -> Path:
    res = two_engines(pytester.path / "res")
    result = pytester.runpytest_subprocess(
        "--gpu", "b200", "--suite", "composability", "--results", str(res), "--report-dir", str(pytester.path / "r"),
        "--infer-matrices", str(kv_matrices(pytester.path / "m")), "-p", "no:cacheprovider")
    assert result.ret == 1, result.stdout.str()  # the offload runs lost requests: failures (test_replay)
    return pytester.path / "r" / "b200"


def test_report_renders_in_headless_chromium(pytester: pytest.Pytester, record_property: Any) -> None:
    chromium = _chromium()
    from playwright.sync_api import Request, Route, sync_playwright

    folder = _replayed_report(pytester)
    # every image the pages reference (other pages than the matrix may come with their own): all there
    images = sorted({m for f in page_files(folder) for m in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", f.read_text())})
    assert {"composability-engines.png", "composability-sglang.png", "composability-vllm.png"} <= set(images)
    assert all((folder / name).is_file() for name in images)
    report = write_html(folder, "pytest-infer: b200 (replayed)")
    url = report.resolve().as_uri()
    screens = Path(os.environ.get("PYTEST_INFER_SCREENSHOTS") or Path(tempfile.gettempdir(), "pytest-infer-shots"))
    screens.mkdir(parents=True, exist_ok=True)
    shot = screens / "report-b200-replayed.png"

    requests: list[str] = []
    errors: list[str] = []

    def route(r: Route, request: Request) -> None:
        if request.url == url:
            r.continue_()
        else:
            r.abort()  # anything else is already a failure below; never let it out

    start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.route("**/*", route)
            response = page.goto(url, wait_until="load")
            assert response is not None and response.ok
            loaded = page.evaluate("""() => Array.from(document.images).map(i =>
                ({file: i.dataset.file, complete: i.complete, width: i.naturalWidth, scheme: i.src.slice(0, 21)}))""")
            tables = page.locator("table").all_inner_texts()
            toc = page.locator("nav.toc a").all_inner_texts()
            missing = page.locator(".missing").all_inner_texts()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    took = time.monotonic() - start
    record_property("screenshot", str(shot))
    print(f"\nscreenshot of {report}: {shot} (browser {took:.1f} s)")

    assert errors == []
    assert [r for r in requests if not r.startswith("data:")] == [url]  # the file itself and nothing else
    assert sorted(i["file"] for i in loaded) == images
    for img in loaded:
        assert img["complete"] and img["width"] > 0 and img["scheme"] == "data:image/png;base64", img
    assert missing == []
    matrix = tables[0]
    for stack in STACKS:
        assert stack in matrix
    assert "FAIL" in matrix and "worst ratio to best part" in matrix
    assert toc[0] == "Composability matrix: b200 (replayed)" and "Levels" in toc[1:4], toc

    from PIL import Image

    with Image.open(shot) as im:
        width, height = im.size
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
    assert width == 1400 and height > 900 * 2, (width, height)  # the whole page, the plots below the tables
    assert shot.stat().st_size > 50_000
    assert colours is None or len(colours) > 50, "the screenshot is nearly one flat colour"
