"""The annotation tool, driven headlessly, and the kill test of the store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aes_lib.collect.protocol import load_protocol
from aes_lib.collect.store import CritiqueStore
from aes_lib.collect.widget import AnnotationTool, annotator_order
from aes_lib.schema import ATTRIBUTES, ImageRecord

DESCRIPTION = "The warm light and the centred cup make a calm, pleasant still life."


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make_images(root: Path, n: int = 4) -> list[ImageRecord]:
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n):
        Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(root / "images" / f"im{i}.png")
        images.append(ImageRecord(id=f"im{i}", file=f"images/im{i}.png", source_photo=f"p{i}",
                                  split="train", title=f"test image {i}"))
    return images


@pytest.fixture
def setup(tmp_path):
    images = make_images(tmp_path)
    store = CritiqueStore(tmp_path / "critiques.db")
    clock = FakeClock()
    tool = AnnotationTool(store, images, tmp_path, "alice", clock=clock)
    yield tool, store, images, clock, tmp_path
    store.close()


def answer_all(tool, grade_key="2", rating=4, description=DESCRIPTION):
    tool.shortcut.value = grade_key            # keyboard shortcut for the grade
    tool.next_button.click()
    for attr in ATTRIBUTES:
        tool.ratings[attr].value = rating
    tool.words["composition"].value = "centred"
    tool.next_button.click()
    tool.description.value = description
    tool.suggestion.value = "Try a lower angle."


def db_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT id, image_id, annotator, annotator_kind, protocol_version, grade, "
                           "attributes, description, seconds_spent, created_at FROM critiques "
                           "ORDER BY created_at, id").fetchall()


def test_submit_walks_the_levels_and_lands_in_sqlite(setup):
    tool, store, images, clock, root = setup
    first = tool.current
    assert first == annotator_order("alice", [i.id for i in images])[0]
    assert tool.image.value == (root / "images" / f"{first}.png").read_bytes()
    # level 1 is validated: no grade, no next
    tool.next_button.click()
    assert tool.step == 0 and "choose an overall grade" in tool.message.value
    tool.shortcut.value = "2"
    assert tool.grade.value == "good" and tool.shortcut.value == ""
    tool.next_button.click()
    assert tool.step == 1 and tool.message.value == ""   # a level answered: its warning is gone
    tool.next_button.click()                           # level 2 is validated too
    assert tool.step == 1 and "rate Technical quality" in tool.message.value
    for attr in ATTRIBUTES:
        tool.ratings[attr].value = 3
    tool.words["vibe"].value = "cosy"
    tool.next_button.click()
    assert tool.step == 2 and tool.message.value == ""
    tool.description.value = "too short"
    tool.submit_button.click()
    assert store.count() == 0 and "at least 8 words" in tool.message.value
    tool.description.value = DESCRIPTION
    clock.t += 42.5
    tool.submit_button.click()
    rows = db_rows(root / "critiques.db")
    assert len(rows) == 1
    cid, image_id, annotator, kind, protocol, grade, attrs, desc, seconds, created = rows[0]
    assert (cid, image_id, annotator, kind, grade, desc) == (f"alice:{first}", first, "alice", "human",
                                                             "good", DESCRIPTION)
    assert protocol == load_protocol().id and seconds == 42.5 and created.endswith("+00:00")
    assert json.loads(attrs)["vibe"] == {"rating": 3, "word": "cosy"}
    assert tool.current != first and tool.step == 0 and tool.grade.value is None
    assert tool.progress.value == 1 and "1 / 4 done, 3 to do" in tool.progress_label.value
    assert "1 human critique by 1 annotator;" in tool.overall_label.value
    assert "saved critique of" in tool.message.value and "#b00" not in tool.message.value


def test_resume_order_skip_flag_and_back(setup):
    tool, store, images, clock, root = setup
    order = annotator_order("alice", [i.id for i in images])
    answer_all(tool)
    tool.submit_button.click()
    assert tool.current == order[1]
    tool.skip_button.click()                           # skipped images come back last
    assert tool.current == order[2]
    assert f"skipped {order[1]}" in tool.message.value    # a confirmation, not silence
    tool.flag_reason.value = "broken image"
    tool.flag_button.click()
    assert store.events("flag")[0]["image_id"] == order[2]
    assert f"flagged {order[2]} (broken image): recorded" in tool.message.value
    assert tool.pending() == [order[3], order[1]]
    # back at the first level returns to the previous image, with nothing to prefill after a flag
    tool.back_button.click()
    assert tool.current == order[2]
    tool.back_button.click()                           # history: order[1] (skipped)
    tool.back_button.click()                           # then the submitted one, prefilled
    assert tool.current == order[0] and tool.grade.value == "good"
    assert tool.description.value == DESCRIPTION and tool.ratings["emotion"].value == 4
    tool.grade.value = "fair"
    tool.next_button.click()
    tool.next_button.click()
    tool.submit_button.click()                         # re-submit replaces, never duplicates
    assert [(c.image_id, c.grade) for c in store.critiques()] == [(order[0], "fair")]
    # closing and reopening resumes where alice stopped; bob starts from scratch in his own order
    reopened = AnnotationTool(store, images, root, "alice")
    assert reopened.current == order[3] and reopened.progress.value == 2
    bob = AnnotationTool(store, images, root, "bob", annotators=["alice", "bob"])
    assert bob.current == annotator_order("bob", [i.id for i in images])[0]
    assert len(bob.pending()) == 4
    bob.annotator_box.value = "alice"                  # switching annotator reloads the queue
    assert bob.current == order[3]


def test_all_done_and_missing_image(tmp_path):
    images = make_images(tmp_path, 1)
    (tmp_path / "images" / "im0.png").unlink()
    store = CritiqueStore(tmp_path / "c.db")
    tool = AnnotationTool(store, images, tmp_path, "carol")
    assert "missing; flag it as broken" in tool.caption.value
    tool.flag_button.click()
    assert tool.current is None and "All done" in tool.caption.value
    assert tool.submit_button.disabled and tool.submit() is None
    store.close()


def test_edited_protocol_drives_the_tool(tmp_path):
    import yaml

    data = yaml.safe_load((Path(__file__).parents[1] / "aes_lib" / "protocols" / "default.yaml").read_text())
    data["version"] = "lab-7"
    data["attributes"] = data["attributes"][:2]
    data["description"]["min_words"] = 2
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    images = make_images(tmp_path, 2)
    store = CritiqueStore(tmp_path / "c.db")
    tool = AnnotationTool(store, images, tmp_path, "dan", protocol=load_protocol(tmp_path / "p.yaml"))
    assert list(tool.ratings) == ["technical_quality", "color_light"]
    tool.grade.value = "bad"
    tool.next_button.click()
    tool.ratings["technical_quality"].value = 1
    tool.ratings["color_light"].value = 2
    tool.next_button.click()
    tool.description.value = "very blurry"
    critique = tool.submit()
    assert critique is not None and critique.protocol_version == "aesexpert-default@lab-7"
    assert store.critiques()[0].attributes.keys() == {"technical_quality", "color_light"}
    store.close()


KILL_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aes_lib.collect.store import CritiqueStore
    from aes_lib.collect.widget import AnnotationTool
    from aes_lib.schema import ATTRIBUTES, ImageRecord

    root = Path(sys.argv[1])
    images = [ImageRecord(id=f"im{i:04d}", file=f"images/im{i:04d}.png", source_photo=f"p{i}",
                          split="train") for i in range(5000)]
    tool = AnnotationTool(CritiqueStore(root / "critiques.db"), images, root, "kate")
    while tool.current is not None:
        tool.grade.value = "fair"
        tool.next_button.click()
        for a in ATTRIBUTES:
            tool.ratings[a].value = 3
        tool.next_button.click()
        tool.description.value = f"Critique number for {tool.current}: plain light, plain framing, nothing more."
        critique = tool.submit()
        print(critique.id, critique.description, flush=True)   # reported only after the commit
""")


def test_killing_the_process_between_submits_loses_nothing(tmp_path):
    """SIGKILL a process that keeps submitting; every submit it reported is intact afterwards."""
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    reported = {}
    try:
        for line in proc.stdout:
            cid, desc = line.rstrip("\n").split(" ", 1)
            reported[cid] = desc
            if len(reported) == 25:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and len(reported) == 25
    with sqlite3.connect(tmp_path / "critiques.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = dict(con.execute("SELECT id, description FROM critiques"))
    for cid, desc in reported.items():
        assert stored.get(cid) == desc, cid
    store = CritiqueStore(tmp_path / "critiques.db")   # the store still opens and validates every row
    assert all(c.annotator == "kate" and c.grade == "fair" for c in store.critiques())
    store.close()


@pytest.mark.parametrize("interactive", [False, True])
def test_notebook_shows_the_tool_only_when_interactive(mini_dataset, tmp_path, interactive):
    import shutil

    import nbformat
    import papermill as pm

    repo = Path(__file__).parents[1]
    shutil.copytree(mini_dataset.parent, tmp_path / "data")
    executed = tmp_path / "notebooks" / "01_collect.ipynb"   # where the runner keeps executed copies:
    executed.parent.mkdir()                                  # a folder the notebook's clearing knows
    pm.execute_notebook(str(repo / "notebooks" / "01_collect.ipynb"), str(executed), cwd=str(repo),
                        parameters={"out_dir": str(tmp_path), "interactive": interactive,
                                    "annotators_per_image": 2}, progress_bar=False, kernel_name="python3")
    outputs = [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert bool(widgets) == interactive
    stats = json.loads((tmp_path / "critiques" / "stats.json").read_text())
    assert stats["annotator_kind"] == "simulated" and stats["n_critiques"] == 2 * stats["n_images"]
    assert (tmp_path / "figures" / "fig_collect_stats.png").stat().st_size > 0


def test_no_annotator_name_is_a_message_not_an_anonymous_row(setup):
    tool, store, images, clock, root = setup
    first = tool.current
    tool.annotator_box.value = "  "
    answer_all(tool)
    assert tool.submit() is None and "type your name" in tool.message.value
    tool.skip()
    tool.flag()
    assert store.critiques() == [] and store.events() == [] and tool.current == first
    tool.annotator_box.value = "alice"
    answer_all(tool)
    assert tool.submit() is not None and [c.annotator for c in store.critiques()] == ["alice"]


def test_key_presses_over_the_image_set_the_grade_and_move(setup):
    """A keydown message as the browser sends it through ipyevents' comm."""
    tool, store, images, clock, root = setup
    assert tool.key_events is not None and tool.key_events.source is tool.image
    assert tool.key_events.watched_events == ["keydown"]
    first = tool.current
    tool.key_events._handle_mouse_msg(None, {"event": "keydown", "key": "1"}, [])
    assert tool.grade.value == "excellent"
    tool.key_events._handle_mouse_msg(None, {"event": "keydown", "key": "N"}, [])
    assert tool.step == 1
    tool.key_events._handle_mouse_msg(None, {"event": "keydown", "key": "b"}, [])
    assert tool.step == 0
    tool.key_events._handle_mouse_msg(None, {"event": "keydown", "key": "s"}, [])
    assert tool.current != first and first in store.skipped_image_ids("alice")


def test_the_tool_owns_its_store_and_outlives_other_handles(tmp_path):
    """Notebook 01's last cell closes the notebook's own store; the live tool must still save."""
    from aes_lib.collect.pipeline import open_store

    images = make_images(tmp_path)
    notebook_store = open_store(tmp_path)
    tool = AnnotationTool.open(tmp_path, images, tmp_path, "alice", clock=FakeClock())
    notebook_store.close()
    answer_all(tool)
    tool.submit_button.click()
    assert "saved critique" in tool.message.value
    rows = db_rows(tmp_path / "critiques" / "critiques.db")
    assert [(r[2], r[3]) for r in rows] == [("alice", "human")]
    tool.close()
    with pytest.raises(sqlite3.ProgrammingError):
        tool.store.count()


def test_an_error_in_a_callback_is_shown_in_the_tool(setup):
    tool, store, images, clock, root = setup
    answer_all(tool)
    store.close()                       # what the notebook's last cell used to do to the tool's store
    tool.submit_button.click()          # must not raise into the kernel's hidden log only
    assert "Error: ProgrammingError" in tool.message.value and "#b00" in tool.message.value
    tool.shortcut.value = "s"
    assert "Error: ProgrammingError" in tool.message.value
