"""The classroom path in a real browser: JupyterLab on 127.0.0.1 driven by Playwright and Chromium.

One JupyterLab server serves a throw-away checkout-shaped folder (``pyproject.toml``, a link to
``aes_lib``, copies of the notebooks, smoke-sized ``outputs/``), so nothing is written into the
repository. The browser is Debian's Chromium (``/usr/bin/chromium``; ``make test`` installs it
when missing and run as root); Playwright never downloads one.
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
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

CHROMIUM = Path(os.environ.get("AES_CHROMIUM", "/usr/bin/chromium"))
ANNOTATOR = "annotator-1"          # notebook 01's default annotator name
WAIT_MS = 240_000                  # a notebook's Run All on 2 busy cores

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} missing: `make test` installs Debian's "
                       "chromium as root (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_parameters(path: Path, stem: str) -> None:
    """Write the smoke profile's values into a notebook's parameters cell, as a teacher would."""
    import nbformat
    import yaml

    values = yaml.safe_load((REPO / "aes_lib" / "profiles" / "smoke.yaml").read_text())["notebooks"][stem]
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split("=", 1)[0].strip()
        if name in values:
            comment = line[line.index("#"):] if "#" in line else ""
            line = f"{name} = {values[name]!r}   {comment}".rstrip()
        lines.append(line)
    cell.source = "\n".join(lines)
    nbformat.write(nb, path)


def prepare_project(root: Path, mini_dataset: Path) -> Path:
    """A checkout-shaped folder with data, simulated critiques and instructions (smoke sizes)."""
    from aes_lib import collect, generate
    from aes_lib.client import ClientConfig

    (root / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "aes_lib").symlink_to(REPO / "aes_lib")
    for name in ("01_collect.ipynb", "03_finetune.ipynb"):
        shutil.copy(REPO / "notebooks" / name, root / "notebooks" / name)
    smoke_parameters(root / "notebooks" / "03_finetune.ipynb", "03_finetune")
    out = root / "outputs"
    shutil.copytree(mini_dataset.parent, out / "data")
    images = collect.load_manifest(out / "data")
    collect.simulate_into_store(out, images, collect.SimulateConfig.from_dict(annotators_per_image=2))
    collect.export_jsonl(out)
    generate.generate(generate.GenerateConfig.from_dict(max_critiques=60), out, ClientConfig.from_dict(),
                      progress=False)
    return root


def kernel_env(base: Path) -> dict[str, str]:
    """JupyterLab's environment: the project kernel (this interpreter) and fresh settings."""
    spec = base / "jupyter" / "kernels" / "aes-companion"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "AesExpert Companion", "language": "python"}))
    settings = base / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {**os.environ, "JUPYTER_PATH": str(base / "jupyter"), "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(base / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory, mini_dataset):
    """(url, project folder): one JupyterLab server for the module."""
    base = tmp_path_factory.mktemp("lab")
    project = prepare_project(base / "project", mini_dataset)
    port, token = free_port(), "aes-browser-test"
    log = (base / "jupyterlab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
         f"--ServerApp.root_dir={project}", f"--IdentityProvider.token={token}", "--allow-root",
         "--KernelManager.transport=ipc", "--LabApp.news_url=None"],
        cwd=project, env=kernel_env(base), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (base / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield f"{url}/lab?token={token}", project, base / "jupyterlab.log"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(lab[0])
        pg.locator(".jp-DirListing-content").wait_for()
        yield pg
        browser.close()


def open_from_file_browser(page, *names: str):
    for name in names:
        page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$")).dblclick()
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    panel.locator(".jp-Notebook-cell").first.wait_for()
    return panel


def run_all(page, panel) -> None:
    """Run > Run All Cells on ``panel``, once the panel is the current notebook; a menu click
    that queued nothing (no input prompt left at ``[ ]``) is made again, once."""
    prompt = panel.locator(".jp-CodeCell .jp-InputArea-prompt").first
    not_run = re.compile(r"^\[\s*\]:?$")
    playwright_api.expect(prompt).to_have_text(not_run)   # a freshly opened notebook
    panel.locator(".jp-Notebook-cell").first.click()   # make this notebook the current widget
    for attempt in (1, 2):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
        try:   # queued ([*]) or run ([1]): the click took
            playwright_api.expect(prompt).not_to_have_text(not_run, timeout=30_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    panel.get_by_text(re.compile(r"all \d+ expected outputs present")).wait_for(state="attached", timeout=WAIT_MS)
    errors = panel.locator(".jp-OutputArea-output", has_text="Traceback")
    assert errors.count() == 0, errors.first.inner_text()


def set_parameter(panel, name: str, old: str, new: str, page) -> None:
    """Change one value in the parameters cell by selecting it in the editor and typing."""
    line = panel.locator(".cm-line", has_text=re.compile(rf"^{name}\s*=\s*{old}\b"))
    line.locator("span", has_text=re.compile(f"^{old}$")).dblclick()
    page.keyboard.type(new)
    playwright_api.expect(panel.locator(".cm-line", has_text=re.compile(rf"^{name}\s*=\s*{new}\b"))).to_have_count(1)


def critique_rows(project: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(project / "outputs" / "critiques" / "critiques.db") as con:
        critiques = con.execute("SELECT image_id, annotator, annotator_kind, seconds_spent, description "
                                "FROM critiques WHERE annotator_kind != 'simulated' ORDER BY created_at").fetchall()
        events = con.execute("SELECT kind, image_id, annotator, reason FROM events ORDER BY seq").fetchall()
    return critiques, events


def test_annotation_tool_in_notebook_01(lab, page, tmp_path):
    url, project, server_log = lab
    expect = playwright_api.expect
    panel = open_from_file_browser(page, "notebooks", "01_collect.ipynb")
    # the notebook's declared kernel is the project's: no kernel dialog, its name in the toolbar
    expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName")).to_have_text(
        re.compile("AesExpert Companion"))
    set_parameter(panel, "interactive", "False", "True", page)
    run_all(page, panel)

    tool = panel.locator(".widget-vbox", has=page.locator(".widget-button", has_text="Flag")).first
    caption = tool.locator(".widget-html b").first          # the image id above the image
    image = tool.locator(".widget-image").first
    textarea = tool.locator("textarea").first
    tool.scroll_into_view_if_needed()

    def current() -> str:
        """The id of the image on show, once the widget has drawn it."""
        expect(caption).to_have_text(re.compile(r"\S"))
        return caption.text_content().strip()   # text_content: JupyterLab skips rendering off-screen cells

    def button(text: str):
        return tool.locator(".jupyter-button", has_text=re.compile(f"^\\s*{re.escape(text)}\\s*$")).first

    def rate_all(rating: str):
        rows = tool.locator(".widget-hbox", has=page.locator(".widget-toggle-buttons"))
        expect(rows).to_have_count(8)
        for row in rows.all():
            row.locator(".widget-toggle-button", has_text=re.compile(f"^{rating}$")).click()

    # critique 1, by mouse: grade, next, ratings, next, description, submit
    first = current()
    button("Good [2]").click()
    button("Next").click()
    rate_all("4")
    button("Next").click()
    textarea.fill("Warm light on a centred subject gives a calm and pleasant picture.")
    time.sleep(1.0)                                       # time spent on the image is recorded
    button("Submit").click()
    expect(tool.get_by_text(f"saved critique of {first}")).to_be_visible()
    expect(caption).not_to_have_text(first)

    # critique 2, by keys: with the pointer over the image, 3 = Fair and n = next
    second = current()
    image.hover()
    page.keyboard.press("3")
    page.keyboard.press("n")
    rate_all("2")
    image.hover()
    page.keyboard.press("n")
    textarea.click()
    page.keyboard.type("Flat grey light and a tilted horizon make this scene feel dull and uneasy.")
    page.keyboard.press("Tab")                            # on to the suggestion box
    page.keyboard.type("Straighten the horizon.")
    button("Submit").focus()
    page.keyboard.press("Enter")
    expect(tool.get_by_text(f"saved critique of {second}")).to_be_visible()

    # skip one (s over the image), flag one (mouse), then go back three times
    skipped = current()
    image.hover()
    page.keyboard.press("s")
    expect(caption).not_to_have_text(skipped)
    flagged = current()
    button("Flag").click()
    expect(caption).not_to_have_text(flagged)
    for expected in (flagged, skipped, second):
        button("Back").click()
        expect(caption).to_have_text(expected)
    # the second critique is filled back in: its grade on this level, its text two levels on
    expect(tool.locator(".widget-toggle-button.mod-active", has_text="Fair")).to_have_count(1)
    button("Next").click()
    button("Next").click()
    expect(textarea).to_have_value(re.compile("tilted horizon"))
    shot = tmp_path / "annotation_tool.png"
    tool.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    assert "Error" not in tool.text_content(), tool.text_content()

    critiques, events = critique_rows(project)
    assert [(c[0], c[1], c[2]) for c in critiques] == [(first, ANNOTATOR, "human"), (second, ANNOTATOR, "human")]
    assert critiques[0][3] >= 1.0 and critiques[1][3] > 0   # seconds spent, recorded
    assert "tilted horizon" in critiques[1][4]
    assert [e[:3] for e in events] == [("skip", skipped, ANNOTATOR), ("flag", flagged, ANNOTATOR)]
    assert not (project / "notebooks" / "outputs").exists()
    assert "ProgrammingError" not in server_log.read_text()


def test_notebook_03_runs_all_with_smoke_parameters(lab, page):
    url, project, server_log = lab
    panel = open_from_file_browser(page, "03_finetune.ipynb")   # the file browser is still in notebooks/
    run_all(page, panel)
    loss = (project / "outputs" / "train" / "run" / "loss.csv").read_text().splitlines()
    assert len(loss) == 1 + 4                                    # a header and the smoke profile's 4 steps
