"""A class annotating at once, in a real browser: ``aes collect serve`` on 127.0.0.1 driven by
Playwright and Debian's Chromium (``/usr/bin/chromium``; Playwright never downloads one).

Three annotators and the teacher in separate browser contexts; critiques by mouse and by keys;
a skip and a flag; the server killed and restarted while a submit is on its way; then the
SQLite rows, the assignment rule, the teacher's counts and alpha, and a context without the join
code that gets nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO

CHROMIUM = Path(os.environ.get("AES_CHROMIUM", "/usr/bin/chromium"))
JOIN, TEACHER = "class-join-7k2m", "teacher-q9xa-2"
PER_IMAGE, N_IMAGES = 2, 6

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} missing: `make test` installs Debian's "
                       "chromium as root (apt-get install chromium)"),
]
expect = playwright_api.expect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``aes collect serve`` in a child process, killed (SIGKILL) and restarted on demand."""

    def __init__(self, data: Path, out: Path, log: Path):
        self.data, self.out, self.log, self.port = data, out, log, free_port()
        self.url, self.proc = f"http://127.0.0.1:{self.port}", None

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aes_lib.cli", "collect", "serve", "--data", str(self.data), "--out",
                 str(self.out), "--port", str(self.port), "--per-image", str(PER_IMAGE), "--join-code", JOIN,
                 "--teacher-code", TEACHER], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/join", timeout=2)
                return
            except urllib.error.HTTPError:
                return                                   # answering (403: the join form)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the class server did not start:\n" + self.log.read_text()[-3000:])
                time.sleep(0.2)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(20)


@pytest.fixture
def server(tmp_path, mini_dataset):
    data = tmp_path / "data"
    shutil.copytree(mini_dataset.parent, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["images"] = manifest["images"][:N_IMAGES]
    (data / "manifest.json").write_text(json.dumps(manifest))
    srv = Server(data, tmp_path / "out", tmp_path / "server.log")
    srv.start()
    yield srv
    if srv.proc.poll() is None:
        srv.proc.terminate()
        try:
            srv.proc.wait(20)
        except subprocess.TimeoutExpired:
            srv.proc.kill()


def image_id(page) -> str:
    expect(page.locator("#image-id")).not_to_have_text("")
    return page.locator("#image-id").text_content().strip()


def open_tool(browser, server, name: str, refused: str | None = None, why: str = ""):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{server.url}/?join={JOIN}")
    if refused:                                          # a name refused, with the reason in the page
        page.fill("#name", refused)
        page.click("#name-go")
        expect(page.locator("#message")).to_contain_text(why)
    page.fill("#name", name)
    page.press("#name", "Enter")
    expect(page.locator("#me")).to_have_text(name)
    return context, page


def by_mouse(page, grade="Good [2]", rating=4, text="Soft warm light and a centred subject make a calm picture.",
             wait: float = 0.0) -> str:
    shown = image_id(page)
    page.locator("button.grade", has_text=grade).click()
    page.click("#next")
    expect(page.locator("#step-1")).to_be_visible()
    for row in page.locator(".attr-row").all():
        row.locator(f"button.rating[data-value='{rating}']").click()
    page.click("#next")
    expect(page.locator("#step-2")).to_be_visible()
    page.fill("#description", text)
    time.sleep(wait)
    page.click("#submit")
    expect(page.locator("#message")).to_contain_text(f"saved critique of {shown}")
    return shown


def by_keys(page, key="3", rating=2) -> str:
    shown = image_id(page)
    page.click("#image")                                 # focus on the page, not in a text box
    page.keyboard.press(key)
    expect(page.locator("button.grade.active")).to_have_count(1)
    page.keyboard.press("n")
    expect(page.locator("#step-1")).to_be_visible()
    page.keyboard.press("n")                             # no ratings yet: the server's message
    expect(page.locator("#message")).to_contain_text("rate Technical quality")
    for row in page.locator(".attr-row").all():
        row.locator(f"button.rating[data-value='{rating}']").click()
    page.keyboard.press("n")
    expect(page.locator("#step-2")).to_be_visible()
    page.click("#description")
    page.keyboard.type("Flat grey light and a tilted horizon make the scene dull.")
    page.keyboard.press("Tab")
    page.keyboard.type("Straighten the horizon.")
    page.focus("#submit")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text(f"saved critique of {shown}")
    return shown


def rows(out: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(out / "critiques" / "critiques.db") as con:
        critiques = con.execute("SELECT image_id, annotator, annotator_kind, seconds_spent, grade, description, "
                                "suggestion FROM critiques ORDER BY created_at").fetchall()
        events = con.execute("SELECT kind, image_id, annotator, reason FROM events ORDER BY seq").fetchall()
    return critiques, events


def test_a_class_annotates_at_once(server, tmp_path):
    from aes_lib.collect.stats import ordinal_alpha
    from aes_lib.collect.store import CritiqueStore
    from aes_lib.schema import ATTRIBUTES, GRADE_SCORE

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            _, ann = open_tool(browser, server, "Ann", refused="<Ann>", why="letters, digits")
            _, ben = open_tool(browser, server, "Ben")
            cy_context, cy = open_tool(browser, server, "Cy", refused="ann", why="is taken")
            expect(ann.locator("#class-label")).to_contain_text(f"{PER_IMAGE} per image, {N_IMAGES} images")

            # all three at once: mouse, keys, a too-short text, a skip and a flag
            first = by_mouse(ann, wait=1.0)
            keyed = by_keys(ben)
            short = image_id(cy)
            cy.locator("button.grade", has_text="Excellent").click()
            cy.click("#next")
            for row in cy.locator(".attr-row").all():
                row.locator("button.rating[data-value='5']").click()
            cy.click("#next")
            cy.fill("#description", "too short")
            cy.click("#submit")
            expect(cy.locator("#message")).to_contain_text("at least 8 words (has 2)")
            cy.click("#image")
            cy.keyboard.press("s")                        # skip by key
            expect(cy.locator("#message")).to_contain_text(f"skipped {short}")
            flagged = image_id(cy)
            cy.select_option("#flag-reason", "broken image")
            cy.click("#flag")
            expect(cy.locator("#message")).to_contain_text(f"flagged {flagged}")
            by_mouse(cy, grade="Excellent [1]", rating=5)

            # a reload and a second tab are the same annotator, on the same image
            on_show = image_id(ann)
            ann.reload()
            expect(ann.locator("#me")).to_have_text("Ann")
            assert image_id(ann) == on_show
            tab = ann.context.new_page()
            tab.goto(server.url + "/")
            expect(tab.locator("#me")).to_have_text("Ann")
            assert image_id(tab) == on_show
            tab.close()

            ann.screenshot(path=str(tmp_path / "class_tool.png"))
            assert (tmp_path / "class_tool.png").stat().st_size > 10_000
            # the server is killed while Ann's critique is on its way, then restarted
            ann.locator("button.grade", has_text="Fair").click()
            ann.click("#next")
            for row in ann.locator(".attr-row").all():
                row.locator("button.rating[data-value='3']").click()
            ann.click("#next")
            ann.fill("#description", "Written before the restart: muddy colours and a cramped frame overall.")
            server.kill()
            ann.click("#submit")
            expect(ann.locator("#status")).to_contain_text("not answering; your answers are kept")
            server.start()
            expect(ann.locator("#message")).to_contain_text(f"saved critique of {on_show}", timeout=30_000)

            # a tab closed mid-critique stores nothing; the image stays the annotator's
            tab = ben.context.new_page()
            tab.goto(server.url + "/")
            half = image_id(tab)
            tab.locator("button.grade", has_text="Bad").click()
            tab.click("#next")
            expect(tab.locator("#step-1")).to_be_visible()
            tab.locator(".attr-row button.rating[data-value='1']").first.click()
            tab.close()
            assert not [c for c in rows(server.out)[0] if c[:2] == (half, "Ben")]
            assert image_id(ben) == half

            # more critiques after the restart, until some images have their k
            assert by_keys(ben, key="2", rating=3) == half
            by_mouse(cy, grade="Poor [4]", rating=2)
            by_mouse(ann, grade="Good [2]", rating=4)

            # two submits of one image at the same moment (two tabs, a double click): one row
            same = image_id(ann)
            statuses = ann.evaluate("""async ([id, answers]) => {
                const send = () => fetch('/api/submit', {method: 'POST', headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({image_id: id, answers, seconds: 3})}).then((r) => r.status);
                return await Promise.all([send(), send()]);
            }""", [same, {"grade": "bad", "attributes": {a: {"rating": 1} for a in ATTRIBUTES},
                          "description": "Sent twice at once from two tabs, stored once in the store."}])
            assert statuses == [200, 200]

            # the teacher's view: counts and alpha
            critiques, events = rows(server.out)
            teacher = browser.new_context().new_page()
            teacher.goto(f"{server.url}/teacher?code={TEACHER}")
            expect(teacher.locator("#n-critiques")).to_have_text(str(len(critiques)))
            def cells(name):
                first_cell = teacher.locator("td:first-child", has_text=re.compile(f"^{name}$"))
                return teacher.locator("#annotators tr").filter(has=first_cell).locator("td")

            for name in ("Ann", "Ben", "Cy"):
                expect(cells(name).nth(1)).to_have_text(str(sum(1 for c in critiques if c[1] == name)))
            expect(cells("Cy").nth(2)).to_have_text("1")                  # skips
            expect(cells("Cy").nth(3)).to_have_text("1")                  # flags
            with CritiqueStore(server.out / "critiques" / "critiques.db") as store:
                alpha = ordinal_alpha(store.critiques(annotator_kind="human"), lambda c: GRADE_SCORE[c.grade])
            shown_alpha = teacher.locator("#agreement tr", has_text="grade").locator(".alpha").text_content()
            assert shown_alpha == ("undefined yet" if alpha is None else f"{alpha:.3f}")
            assert alpha is not None                      # several images have two critiques by now
            expect(teacher.locator("body")).to_contain_text("aes collect export")
            teacher.screenshot(path=str(tmp_path / "teacher.png"), full_page=True)

            # a browser without the join code gets nothing: no page, no API, no image
            stranger = browser.new_context().new_page()
            response = stranger.goto(server.url + "/")
            assert response.status == 403
            expect(stranger.locator("body")).to_contain_text("needs the join code")
            assert stranger.locator("#tool").count() == 0
            for path in ("/api/state", "/api/protocol", f"/api/image/{first}", "/static/annotate.js",
                         f"/api/critique/{first}"):
                assert stranger.request.get(server.url + path).status == 403, path
            assert stranger.request.post(server.url + "/api/name", data={"name": "Eve"}).status == 403
            # and a joined annotator cannot read someone else's critique or image
            assert cy_context.request.get(f"{server.url}/api/critique/{first}").status == 404
            with sqlite3.connect(server.out / "critiques" / "critiques.db") as con:
                handed_to_cy = {r[0] for r in con.execute(
                    "SELECT image_id FROM class_assignments WHERE annotator = 'Cy'")}
            ids = [im["id"] for im in json.loads((server.data / "manifest.json").read_text())["images"]]
            not_cys = [i for i in ids if i not in handed_to_cy]
            assert not_cys and {short, flagged} <= handed_to_cy
            for i in ids:
                status = cy_context.request.get(f"{server.url}/api/image/{i}").status
                assert status == (200 if i in handed_to_cy else 404), i
            assert "Traceback" not in server.log.read_text()
        finally:
            browser.close()

    critiques, events = rows(server.out)
    assert {c[1] for c in critiques} == {"Ann", "Ben", "Cy"} and {c[2] for c in critiques} == {"human"}
    assert len(critiques) == 8
    assert [c[:2] for c in critiques if c[5].startswith("Sent twice")] == [(same, "Ann")]
    assert all(c[3] > 0 for c in critiques)                                  # time spent recorded
    assert next(c for c in critiques if c[0] == first and c[1] == "Ann")[3] >= 1.0
    assert next(c for c in critiques if c[0] == keyed)[6] == "Straighten the horizon."
    restart = [c for c in critiques if c[5].startswith("Written before the restart")]
    assert len(restart) == 1 and restart[0][:2] == (on_show, "Ann")        # stored once, not lost
    per_image = Counter(c[0] for c in critiques)
    assert max(per_image.values()) <= PER_IMAGE and len(set((c[0], c[1]) for c in critiques)) == len(critiques)
    ids = [im["id"] for im in json.loads((server.data / "manifest.json").read_text())["images"]]
    with sqlite3.connect(server.out / "critiques" / "critiques.db") as con:
        held = Counter(r[0] for r in con.execute("SELECT image_id FROM class_assignments WHERE state = 'open'"))
    filled = [per_image.get(i, 0) + held.get(i, 0) for i in ids]     # critiques + images on someone's screen
    assert max(filled) - min(filled) <= 1 and max(filled) <= PER_IMAGE   # images fill up together
    assert [e[:3] for e in events] == [("skip", short, "Cy"), ("flag", flagged, "Cy")]
    assert events[1][3] == "broken image"
    assert not any(c[1] == "Cy" and c[0] in (short, flagged) for c in critiques)   # not handed back to Cy
