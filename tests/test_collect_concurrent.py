"""Two annotation tools open at once under the same annotator name (two browser tabs, two
notebooks): nothing the tool reported as saved is lost. Real processes on one SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aes_lib.collect.store import CritiqueStore

from test_collect_widget import make_images

#: one tool in its own process: waits for `go-<tag>` before each submit, writes what it was told
TOOL = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from aes_lib.collect.store import CritiqueStore
    from aes_lib.collect.widget import AnnotationTool
    from aes_lib.schema import ATTRIBUTES
    from test_collect_widget import make_images

    root, tag = Path(sys.argv[1]), sys.argv[2]
    images = make_images(root)
    store = CritiqueStore(root / "critiques.db")
    tool = AnnotationTool(store, images, root, "alice")
    (root / f"ready-{tag}").write_text(tool.current or "")   # both windows show their first image
    said = []
    for step in range(len(images)):
        go = root / f"go-{tag}-{step}"
        while not go.exists():
            time.sleep(0.02)
        tool.shortcut.value = "2"
        tool.next_button.click()
        for attr in ATTRIBUTES:
            tool.ratings[attr].value = 4
        tool.next_button.click()
        tool.description.value = f"Window {tag} thinks the warm light and the centred cup are calm."
        image = tool.current
        saved = tool.submit() is not None
        said.append({"image": image, "saved": saved, "message": tool.message.value})
        if not saved:
            tool.skip()
        (root / f"done-{tag}-{step}").write_text(json.dumps(said[-1]))
    (root / f"said-{tag}.json").write_text(json.dumps(said))
''')


def _wait(path: Path, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def test_same_annotator_in_two_tools_loses_nothing_reported_saved(tmp_path):
    make_images(tmp_path)
    tests = Path(__file__).resolve().parent
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    env_path = str(tests.parent)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), tag, str(tests)],
                              env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
                              stderr=subprocess.PIPE, text=True) for tag in ("A", "B")]
    try:
        for tag in ("A", "B"):
            _wait(tmp_path / f"ready-{tag}")
        for step in range(4):   # A submits, then B, on the image both tools show at that moment
            for tag in ("A", "B"):
                (tmp_path / f"go-{tag}-{step}").write_text("")
                _wait(tmp_path / f"done-{tag}-{step}")
        for proc in procs:
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        for proc in procs:
            proc.kill()
    said = {tag: json.loads((tmp_path / f"said-{tag}.json").read_text()) for tag in ("A", "B")}
    with CritiqueStore(tmp_path / "critiques.db") as store:
        stored = {c.image_id: c.description for c in store.critiques(annotator="alice")}
    reported = [(tag, s["image"]) for tag in said for s in said[tag] if s["saved"]]
    for tag, image in reported:   # every "saved" is in the store, with that window's text
        assert stored.get(image, "").startswith(f"Window {tag} "), (tag, image, stored.get(image))
    assert len(reported) == len(stored)
    refused = [s for s in said["B"] if not s["saved"] and s["image"] is not None]   # None: nothing left to do
    assert refused, "the two windows never submitted the same image: the test checked nothing"
    assert all("not saved" in s["message"] and "another window" in s["message"] for s in refused), refused


def test_back_and_resubmit_in_one_tool_still_replaces(tmp_path):
    from aes_lib.collect.widget import AnnotationTool
    from test_collect_widget import answer_all

    images = make_images(tmp_path)
    with CritiqueStore(tmp_path / "critiques.db") as store:
        tool = AnnotationTool(store, images, tmp_path, "alice")
        answer_all(tool)
        first = tool.submit()
        tool.back()   # shows the saved critique again; a second submit replaces it
        tool.next_button.click()
        tool.next_button.click()
        tool.description.value = "On reflection the light is harsh and the cup sits awkwardly low."
        again = tool.submit()
        assert again is not None and again.id == first.id
        assert [c.description for c in store.critiques()] == [again.description]
