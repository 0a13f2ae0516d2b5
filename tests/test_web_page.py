"""The drawing page in a real headless Chromium, against a real `digitrec serve` process.

Chromium is Debian's (`apt-get install chromium`), driven by Playwright with `executable_path`, so no browser
is downloaded. Where it is missing the tests skip, except in CI (CI=true), where a skip would hide a broken
install step, so they fail instead."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")


def _chromium() -> str:
    found = os.environ.get("DIGITREC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("Chromium not found: CI must install Debian's chromium (see .ci/run)")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def server_url():
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    assert line.startswith("digitrec: serving "), line
    yield line.split(" at ")[1].split("/ ")[0]
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server_url):
    """A fresh page on the drawing app; records console errors and any request leaving the server."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    pg = context.new_page()
    pg.problems = []
    pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"console: {m.text}"))
    pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
    own = (server_url, "blob:" + server_url)  # uploads are previewed from blob: URLs of the page's own origin
    pg.on("request", lambda r: r.url.startswith(own) or pg.problems.append(f"left the server: {r.url}"))
    pg.goto(server_url + "/")
    pg.wait_for_function("document.getElementById('model-line').textContent.length > 0")
    yield pg
    context.close()


def stroke(pg, points: list[tuple[float, float]]) -> None:
    """One pen stroke through `points`, given as fractions of the pad's width and height."""
    box = pg.locator("#pad").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    pg.mouse.move(*xy[0])
    pg.mouse.down()
    for a, b in zip(xy, xy[1:], strict=False):
        pg.mouse.move(*b, steps=max(2, int(np.hypot(b[0] - a[0], b[1] - a[1]) / 6)))
    pg.mouse.up()


def answer(pg, after: int = 0) -> None:
    """Wait for the page to show the answer to a request newer than `after`."""
    pg.wait_for_function(f"Number(document.body.dataset.answered || 0) > {after}", timeout=30_000)


def test_drawn_digits_are_read(page):
    stroke(page, [(0.5, 0.15), (0.5, 0.85)])  # a 1
    answer(page)
    assert page.text_content("#result-digit") == "1"
    assert page.locator("#probs li").count() == 10
    assert page.text_content("#result-confidence").endswith("%")
    seen = page.evaluate("Array.from(document.getElementById('seen').getContext('2d')"
                         ".getImageData(0, 0, 112, 112).data).reduce((a, b) => a + b, 0)")
    assert seen > 112 * 112 * 255  # the 28x28 the model saw is drawn (opaque black alone is 112*112*255)

    page.click("#clear")
    assert page.is_hidden("#digit-result")
    answered = int(page.evaluate("document.body.dataset.answered"))
    stroke(page, [(0.22, 0.2), (0.78, 0.2), (0.42, 0.88)])  # a 7
    answer(page, answered)
    assert page.text_content("#result-digit") == "7"
    assert page.problems == []


def test_a_drawn_number_is_read(page):
    page.check("#mode-number")
    assert page.evaluate("document.getElementById('pad').width") == 700
    for x in (0.2, 0.5, 0.8):  # three 1s
        stroke(page, [(x, 0.15), (x, 0.85)])
    page.click("#read")
    answer(page)
    assert page.text_content("#result-text") == "111"
    assert page.locator("#number-digits li").count() == 3
    assert page.problems == []


def test_uploads(page, tmp_path):
    from digitrec.data import load_dataset

    test = load_dataset("mnist", "test")
    digit = Image.fromarray(255 - test.images[0]).resize((140, 140), Image.BICUBIC)
    photo = tmp_path / "my-digit.png"
    digit.save(photo)
    page.set_input_files("#file", str(photo))
    answer(page)
    assert page.text_content("#result-digit") == str(test.labels[0])
    assert page.is_hidden("#result-several")

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == (
        "file 'notes.txt': not an image in a format read here (PNG, JPEG, GIF, BMP, TIFF, WebP)")
    assert page.is_hidden("#digit-result")

    row = np.pad(np.concatenate([255 - test.images[i] for i in range(4)], axis=1), 8, constant_values=255)
    buf = io.BytesIO()
    Image.fromarray(row).resize((row.shape[1] * 3, row.shape[0] * 3)).save(buf, "PNG")
    (tmp_path / "row.png").write_bytes(buf.getvalue())
    answered = int(page.evaluate("document.body.dataset.answered || 0"))
    page.set_input_files("#file", str(tmp_path / "row.png"))  # a number in "A digit" mode: the page says so
    answer(page, answered)
    assert page.is_visible("#result-several") and page.is_visible("#result-unsure")

    answered = int(page.evaluate("document.body.dataset.answered || 0"))
    page.check("#mode-number")  # the hint's advice: the upload stays and is read as a number, not lost
    answer(page, answered)
    assert page.text_content("#result-text") == "".join(map(str, test.labels[:4]))
    problems = [p for p in page.problems if "400" not in p]  # the bad upload's 400 is logged by Chromium
    assert problems == []


def test_an_empty_pad_is_not_sent(page):
    requests = []
    page.on("request", lambda r: "/api/v1/predict" in r.url and requests.append(r.url))
    page.click("#read")
    assert page.text_content("#status") == "Draw a digit first."
    time.sleep(0.3)
    assert requests == []


def test_a_proxy_error_page_is_reported_as_what_it_is(page, server_url):
    """Behind a proxy an error may come as HTML (nginx's 413 for a big photo): say so, not 'unreachable'."""
    page.route("**/api/v1/predict*", lambda route: route.fulfill(
        status=413, content_type="text/html", body="<html><body>413 Request Entity Too Large</body></html>"))
    stroke(page, [(0.5, 0.15), (0.5, 0.85)])
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == "The server answered 413 Payload Too Large."  # the status text
    assert page.text_content("#announce").startswith("Error: The server answered 413")


def _upload_test_digit(page, path, index: int) -> int:
    """Upload MNIST test digit `index`, dark on white at 112 px, as the file `path`; wait for the answer and
    return the digit's label."""
    from digitrec.data import load_dataset

    test = load_dataset("mnist", "test")
    Image.fromarray(255 - test.images[index]).resize((112, 112)).save(path)
    page.set_input_files("#file", str(path))
    answer(page)
    return int(test.labels[index])


def test_read_sends_an_upload_again_and_a_bad_upload_clears_the_pad(page, tmp_path):
    label = _upload_test_digit(page, tmp_path / "digit.png", 1)
    page.wait_for_function("!document.getElementById('pad').toDataURL().startsWith('data:,')")
    sent = []
    page.on("request", lambda r: "/api/v1/predict" in r.url and sent.append(r))
    page.click("#read")
    answer(page, 1)
    assert len(sent) == 1 and page.text_content("#result-digit") == str(label)
    assert page.text_content("#announce").startswith(f"Read {label}, confidence")

    blank = page.evaluate("(() => { const c = document.createElement('canvas'); c.width = c.height = 280;"
                          " const x = c.getContext('2d'); x.fillStyle = '#fff'; x.fillRect(0, 0, 280, 280);"
                          " return c.toDataURL(); })()")
    assert page.evaluate("document.getElementById('pad').toDataURL()") != blank  # the photo is on the pad
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert page.evaluate("document.getElementById('pad').toDataURL()") == blank


def test_switching_mode_keeps_a_drawing_and_reads_it_again(page):
    for x in (0.3, 0.7):  # two 1s in "A digit" mode
        stroke(page, [(x, 0.2), (x, 0.8)])
    answer(page)
    answered = int(page.evaluate("document.body.dataset.answered"))
    page.check("#mode-number")
    answer(page, answered)
    assert page.evaluate("document.getElementById('pad').width") == 700
    assert page.text_content("#result-text") == "11"
    ink_height = ("(() => { const c = document.getElementById('pad'); const d = c.getContext('2d')"
                  ".getImageData(0, 0, c.width, c.height).data; let top = c.height, bottom = -1;"
                  " for (let i = 0; i < d.length; i += 4) if (d[i] < 128) { const y = Math.floor(i / 4 / c.width);"
                  " top = Math.min(top, y); bottom = Math.max(bottom, y); } return bottom - top; })()")
    tall = page.evaluate(ink_height)
    for _ in range(2):  # back and forth: the drawing is refitted from its ink each time, not shrunk
        page.check("#mode-digit")
        page.check("#mode-number")
    assert page.evaluate(ink_height) >= 0.9 * tall
    assert page.problems == []


def test_an_upload_the_browser_cannot_show_is_still_read_again(page, tmp_path):
    """Chromium shows no TIFF, but the server reads it: Read must send it again, not ask for a drawing."""
    label = _upload_test_digit(page, tmp_path / "scan.tif", 0)
    assert page.text_content("#result-digit") == str(label)
    answered = int(page.evaluate("document.body.dataset.answered"))
    page.click("#read")
    answer(page, answered)
    assert page.text_content("#result-digit") == str(label)
    assert page.is_hidden("#status")  # not "Draw a digit first."
