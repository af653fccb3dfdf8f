"""End to end in a real browser: Debian's Chromium driven by Playwright against ``siam serve``.

Playwright cannot download its own browsers here, so the test launches ``/usr/bin/chromium``
(installed by ``.ci/run``); without it the test is skipped with a loud reason.
Set ``SIAM_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from pathlib import Path

import pytest

from .conftest import post_multipart

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000
SCORE_RE = re.compile(r"^-?\d+\.\d{3}$")  # a displayed score, e.g. 5.123


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(
            f"BROWSER TEST SKIPPED: {CHROMIUM} is missing. Install Debian's chromium "
            "(apt-get install -y chromium; .ci/run does this) to run the end-to-end browser test."
        )
    return CHROMIUM


def test_browser_upload_explain_intervene_and_error(live_server, chromium_path, photo_path, tmp_path):
    from playwright.sync_api import expect

    base = live_server.url
    shots = Path(os.environ.get("SIAM_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("these are my holiday notes, not a photo\n")
    problems: list[str] = []
    expect.set_options(timeout=TIMEOUT_MS)

    with _chromium_page(chromium_path, problems) as page:
        page.on(
            "console",
            lambda msg: msg.type == "error"
            and "status of 415" not in msg.text  # the deliberate bad upload below
            and problems.append(f"console: {msg.text}"),
        )
        page.on("request", lambda req: req.url.startswith(base) or problems.append(f"external: {req.url}"))

        page.goto(f"{base}/")
        expect(page.locator("#gallery canvas")).to_have_count(6)  # template gallery from /v1/model
        expect(page.locator("#model-info")).to_contain_text("6 attributes")
        expect(page.locator("#target-picker")).to_be_hidden()  # one target: no selector

        # 1. upload a real photo: a score, an overlay, framed top attributes
        page.set_input_files("#file-input", str(photo_path))
        expect(page.locator("#result")).to_be_visible()
        expect(page.locator("#score")).to_have_text(SCORE_RE)
        page.wait_for_function(
            "() => { const i = document.getElementById('overlay');"
            " return i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 0; }"
        )
        assert page.locator("#top-cards .card.raise-frame").count() >= 1
        assert page.locator("#top-cards .card.lower-frame").count() >= 1
        border = page.locator("#top-cards .card.raise-frame").first.evaluate(
            "el => getComputedStyle(el).borderTopColor"
        )
        assert border == "rgb(27, 120, 55)", border  # green frame for "raises the score"
        score = float(page.locator("#score").inner_text())

        # 2. switch the top positive attribute off: the score drops, confirmed by the server
        row = page.locator("#attributes tbody tr.raise-frame").first
        name = row.get_attribute("data-name")
        row.locator(".attr-toggle").uncheck()
        expect(page.locator("#new-score")).to_have_attribute("data-source", "server")
        expect(page.locator("#server-status")).to_contain_text("confirmed by the server")
        new_score = float(page.locator("#new-score").inner_text())
        status, expected = post_multipart(f"{base}/v1/intervene", photo_path.read_bytes(), remove=[name])
        assert status == 200, expected
        assert new_score < score
        assert new_score == pytest.approx(expected["score"], abs=1e-3)
        page.screenshot(path=str(shots / "serve_explained.png"), full_page=True)

        # 3. a text file: a visible error naming the problem
        page.set_input_files("#file-input", str(text_file))
        error = page.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("HTTP 415")
        expect(error).to_contain_text("a text file")
        expect(page.locator("#result")).to_be_hidden()
        page.screenshot(path=str(shots / "serve_error.png"), full_page=False)

        # 4. drag and drop a photo: the error goes away; scale a lowering attribute by 0.5
        b64 = base64.b64encode(photo_path.read_bytes()).decode()
        transfer = page.evaluate_handle(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
                return dt;
            }""",
            b64,
        )
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
        expect(page.locator("#overlay-caption")).to_contain_text("dropped.jpg")
        expect(error).to_be_hidden()
        assert float(page.locator("#score").inner_text()) == score  # same photo, same score
        row = page.locator("#attributes tbody tr.lower-frame").first
        name = row.get_attribute("data-name")
        row.locator(".attr-scale").evaluate(
            "el => { el.value = '0.5'; el.dispatchEvent(new Event('input', { bubbles: true })); }"
        )
        expect(page.locator("#server-status")).to_contain_text("confirmed by the server")
        expect(page.locator("#new-score")).to_have_attribute("data-source", "server")
        status, expected = post_multipart(f"{base}/v1/intervene", photo_path.read_bytes(), scale={name: 0.5})
        assert status == 200, expected
        scaled = float(page.locator("#new-score").inner_text())
        assert scaled > score  # half of a negative contribution removed
        assert scaled == pytest.approx(expected["score"], abs=1e-3)
    assert not problems, problems
    assert (shots / "serve_explained.png").stat().st_size > 10_000


def test_api_docs_render_with_the_network_unreachable(live_server, chromium_path):
    """/docs (Swagger UI) renders with every request off this server refused: its assets are
    served by the app (fastapi-offline), not a CDN."""
    from playwright.sync_api import expect, sync_playwright

    base = live_server.url
    blocked: list[str] = []
    problems: list[str] = []
    expect.set_options(timeout=TIMEOUT_MS)

    def only_local(route):  # the network is unreachable: anything not on 127.0.0.1 fails
        if route.request.url.startswith(base) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path), args=ARGS, headless=True)
        try:
            context = browser.new_context()
            context.route("**/*", only_local)
            web = context.new_page()
            web.set_default_timeout(TIMEOUT_MS)
            web.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            web.goto(f"{base}/docs")
            expect(web.locator("#swagger-ui .info .title").first).to_contain_text("siam explorer")
            for path in ("/v1/explain", "/v1/intervene"):  # the operations, drawn from /openapi.json
                expect(web.get_by_text(path, exact=True).first).to_be_visible()
        finally:
            browser.close()
    assert not blocked, f"/docs tried to reach the network: {blocked}"
    assert not problems, problems


def test_page_says_when_the_model_was_trained_on_synthetic_scenes(
    synthetic_live_server, live_server, chromium_path, photo_path
):
    """A model trained on `siam synth` scenes says on the page that photographs are beyond it;
    a model without that record shows no such note."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{synthetic_live_server.url}/")
            note = page.locator("#trained-on-note")
            expect(note).to_be_visible()
            expect(note).to_contain_text("synthetic planted scenes")
            expect(note).to_contain_text("not meaningful")
            page.set_input_files("#file-input", str(photo_path))
            expect(page.locator("#score")).to_have_text(SCORE_RE)
            expect(note).to_be_visible()  # still there next to the explanation of the photo
            page.goto(f"{live_server.url}/")
            expect(page.locator("#model-info")).to_contain_text("6 attributes")
            expect(page.locator("#trained-on-note")).to_be_hidden()
        finally:
            browser.close()


def test_target_selector_switches_the_shown_target(two_target_live_server, chromium_path, photo_path):
    """A two-target model: the page offers both targets; switching shows the other target's score,
    equal to what the API computes for it (the one-target page hides the selector: first test)."""
    from playwright.sync_api import expect

    from .conftest import TARGETS

    base = two_target_live_server.url
    status, api = post_multipart(f"{base}/v1/explain", photo_path.read_bytes())
    assert status == 200, api
    want = {t["name"]: t["score"] for t in api["targets"]}
    assert set(want) == set(TARGETS) and abs(want[TARGETS[0]] - want[TARGETS[1]]) > 1e-3
    problems: list[str] = []
    expect.set_options(timeout=TIMEOUT_MS)
    with _chromium_page(chromium_path, problems) as page:
        page.goto(f"{base}/")
        select = page.locator("#target-select")
        expect(page.locator("#target-picker")).to_be_visible()
        expect(select.locator("option")).to_have_count(len(TARGETS))
        page.set_input_files("#file-input", str(photo_path))
        expect(page.locator("#score")).to_have_text(SCORE_RE)
        assert float(page.locator("#score").inner_text()) == pytest.approx(want[TARGETS[0]], abs=1e-3)
        select.select_option(label=TARGETS[1])
        expect(page.locator("#score")).not_to_have_text(f"{want[TARGETS[0]]:.3f}")
        assert float(page.locator("#score").inner_text()) == pytest.approx(want[TARGETS[1]], abs=1e-3)
        select.select_option(label=TARGETS[0])
        expect(page.locator("#score")).to_have_text(f"{want[TARGETS[0]]:.3f}")
    assert not problems, problems


@contextlib.contextmanager
def _chromium_page(chromium_path: Path, problems: list[str]):
    """A 1280x1100 headless Chromium page that records page errors in ``problems``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            yield page
        finally:
            browser.close()
