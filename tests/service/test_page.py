"""The web page of ``facefuse serve`` in a real browser: Debian's chromium driven headless
by Playwright (``.ci/run`` installs both), against a real server started here. It uploads
an LFW photo (read in place from the shared data), waits for the faces drawn, enrols the
face in a gallery and searches a second photo of the same person; screenshots are saved
under the test's temporary folder (their paths are printed)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")
playwright = pytest.importorskip("playwright.sync_api")

from tests.service.server import BLAIR, Server, photo  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox"])
        yield b
        b.close()


def test_the_page_analyzes_enrols_and_searches(browser, shared_data: Path,
                                               tmp_path: Path) -> None:
    server = Server("--gallery-root", str(tmp_path / "galleries"))
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#photo", str(photo(shared_data, BLAIR, 1)))
        page.wait_for_selector("#faces tr.face", timeout=60_000)
        assert page.get_attribute("#canvas", "data-faces") == "1"
        assert page.locator("#faces tr.face").count() == 1
        assert "1 face(s)" in page.inner_text("#status")
        assert page.evaluate("document.getElementById('canvas').width") == 90
        shot = tmp_path / "page-analyze.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
        print(f"screenshot: {shot}")

        page.click("#create")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".includes('created')", timeout=30_000)
        page.fill("#subject", "Tony Blair")
        page.click("#enrol")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".includes('enrolled as Tony Blair')", timeout=60_000)
        page.set_input_files("#photo", str(photo(shared_data, BLAIR, 2)))
        page.wait_for_function("document.getElementById('status').textContent"
                               ".includes('Tony_Blair_0002.jpg: 1 face')", timeout=60_000)
        page.click("#search")
        page.wait_for_selector("#matches .match", timeout=60_000)
        assert "face 0: Tony Blair" in page.inner_text("#matches")
        page.screenshot(path=str(tmp_path / "page-search.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'page-search.png'}")
    finally:
        server.stop()


def test_the_page_shows_errors(browser, shared_data: Path, tmp_path: Path) -> None:
    server = Server()  # no galleries
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        page.set_input_files("#photo", str(bad))
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "not an image" in page.inner_text("#status")
        page.set_input_files("#photo", str(photo(shared_data, BLAIR, 1)))
        page.wait_for_selector("#faces tr.face", timeout=60_000)
        page.click("#search")
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "--gallery-root" in page.inner_text("#status")
    finally:
        server.stop()
