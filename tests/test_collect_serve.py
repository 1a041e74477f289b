"""The class annotation server's logic: names, assignment, checks, access (no browser here;
tests/test_browser_class.py drives the served page in Chromium)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from aes_lib.collect.classroom import ClassError, ClassSession, check_name, check_step, clean_answers
from aes_lib.collect.protocol import load_protocol
from aes_lib.collect.store import CritiqueStore
from aes_lib.schema import ATTRIBUTES, ImageRecord

from test_collect_widget import make_images

PROTOCOL = load_protocol()
GOOD = {"grade": "good", "attributes": {a: {"rating": 4, "word": None} for a in ATTRIBUTES},
        "description": "Soft light on a centred subject gives a calm and pleasant picture.", "suggestion": ""}


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


@pytest.fixture
def make_session(tmp_path):
    stores = []

    def make(n_images=6, per_image=2, **kw):
        images = [ImageRecord(id=f"im{i}", file=f"images/im{i}.png", source_photo=f"p{i}", split="train")
                  for i in range(n_images)]
        store = CritiqueStore(tmp_path / "critiques.db")
        stores.append(store)
        return ClassSession(store, images, PROTOCOL, per_image=per_image, **kw)

    yield make
    for s in stores:
        s.close()


def join(session, *names):
    return [session.claim(n, None)[0] for n in names]


# --- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, name", [("Alice", "Alice"), ("  Ana  María ", "Ana María"), ("o'Neil-2", "o'Neil-2"),
                                       ("李雷", "李雷"), ("Jo\tAnn", "Jo Ann")])
def test_names_that_are_accepted(raw, name):
    assert check_name(raw) == name


@pytest.mark.parametrize("raw, says", [("", "type your name"), ("   ", "type your name"), (None, "type your name"),
                                       ("x" * 33, "at most 32"), ("a:b", "letters, digits"),
                                       ("<script>", "letters, digits"), ("-bob", "letters, digits"),
                                       ("bo\x00b", "letters, digits"), ("bob.", "letters, digits"),
                                       ("sim-01", "reserved"), ("Teacher", "reserved")])
def test_names_that_are_refused_say_why(raw, says):
    with pytest.raises(ClassError, match=says):
        check_name(raw)


def test_a_name_is_one_persons_a_reload_resumes_and_simulated_names_are_refused(make_session):
    s = make_session()
    name, token = s.claim("Alice", None)
    assert s.who(token) == "Alice"
    assert s.claim("alice", token) == ("Alice", token)          # a second tab, same browser
    with pytest.raises(ClassError, match="taken") as e:
        s.claim("ALICE", None)                                   # somebody else
    assert e.value.status == 409
    with pytest.raises(ClassError, match="taken"):
        s.claim("Alice", "a-guessed-token")
    s.store.add_many([_critique("sim-x", "im0", kind="simulated")])
    with pytest.raises(ClassError, match="simulated critiques"):
        s.claim("SIM-X", None)


def _critique(annotator, image_id, kind="human"):
    from aes_lib.schema import Critique

    return Critique(id=f"{annotator}:{image_id}", image_id=image_id, annotator=annotator, annotator_kind=kind,
                    protocol_version="p@1", grade="fair", attributes={}, description="d", suggestion="",
                    seconds_spent=1.0, created_at="2026-01-01T00:00:00+00:00", source="t", extra={})


# --- answers -------------------------------------------------------------------------------

def test_answers_are_checked_by_the_protocol_and_for_type_and_size():
    assert clean_answers(PROTOCOL, GOOD)["grade"] == "good"
    cases = [({**GOOD, "grade": None}, "choose an overall grade"),
             ({**GOOD, "grade": "superb"}, "unknown grade"),
             ({**GOOD, "grade": True}, "grade must be one of the grade names"),
             ({**GOOD, "attributes": {**GOOD["attributes"], "vibe": {"rating": True}}}, "Vibe: rating must be a whole"),
             ({**GOOD, "attributes": {**GOOD["attributes"], "vibe": {"rating": 7}}}, "Vibe: rating must be 1-5"),
             ({**GOOD, "attributes": {**GOOD["attributes"], "vibe": {"rating": 4, "word": "x" * 41}}},
              "Vibe word is too long"),
             ({**GOOD, "attributes": {**GOOD["attributes"], "smell": {"rating": 4}}}, "unknown attributes: smell"),
             ({**GOOD, "description": "too short"}, "at least 8 words"),
             ({**GOOD, "description": "word " * 1000}, "description is too long: 4999 characters"),
             ({**GOOD, "suggestion": ["a"]}, "suggestion must be text"),
             ("grade=good", "must be a JSON object")]
    for answers, says in cases:
        with pytest.raises(ClassError, match=says):
            clean_answers(PROTOCOL, answers)
    check_step(PROTOCOL, "grade", {"grade": "fair"})               # one level at a time, like Next
    with pytest.raises(ClassError, match="rate Technical quality"):
        check_step(PROTOCOL, "attributes", {"grade": "fair"})
    with pytest.raises(ClassError, match="unknown step"):
        check_step(PROTOCOL, "everything", {})


# --- assignment ----------------------------------------------------------------------------

def test_each_image_gets_k_critiques_from_k_annotators_and_images_fill_up_together(make_session):
    s = make_session(n_images=7, per_image=3)
    names = join(s, "ann", "ben", "cy", "dee", "eve")
    spread = []
    handed = Counter()
    active = True
    while active:
        active = False
        for n in names:                                     # annotators take turns, one critique each
            image_id = s.current(n)
            if image_id is None:
                continue
            handed[(n, image_id)] += 1
            s.submit(n, image_id, GOOD, 10)
            active = True
            counts = Counter(c.image_id for c in s.store.critiques())
            spread.append(max(counts.get(i, 0) for i in s.images) - min(counts.get(i, 0) for i in s.images))
    pairs = [(c.image_id, c.annotator) for c in s.store.critiques()]
    assert Counter(i for i, _ in pairs) == {i: 3 for i in s.images}     # k per image
    assert len(set(pairs)) == len(pairs) and max(handed.values()) == 1  # nobody had an image twice
    assert max(spread) <= 1                                             # images approach k together
    assert all(s.current(n) is None for n in names)


def test_skip_and_flag_pass_the_image_on_and_flags_withdraw_it(make_session):
    s = make_session(n_images=2, per_image=2, flag_limit=2)
    a, b, c = join(s, "ann", "ben", "cy")
    first = s.current(a)
    assert s.pass_on(a, first, "skip") and not s.pass_on(a, first, "skip")   # a repeated click: one event
    assert s.current(a) != first                                   # never handed back to ann
    assert s.current(b) == first                                   # ben gets the skipped image
    assert s.pass_on(b, first, "flag", "broken image")
    assert s.current(c) == first                                   # one flag: still handed out
    assert s.pass_on(c, first, "flag", "other")
    assert s.overview()["withdrawn"] == [first]
    other = s.current(c)                                           # the other image, now held by ann and cy
    d, = join(s, "dee")
    assert s.current(d) is None                                    # two flags: first withdrawn, though empty
    assert [e["kind"] for e in s.store.events()] == ["skip", "flag", "flag"]
    with pytest.raises(ClassError, match="choose a reason"):
        s.pass_on(c, other, "flag", "I do not like it")
    with pytest.raises(ClassError, match="not yours to critique"):
        s.submit(a, first, GOOD, 5)                                # ann skipped it


def test_a_closed_tab_passes_its_image_on_after_the_lease(make_session):
    clock = Clock()
    s = make_session(n_images=1, per_image=1, lease_seconds=300, clock=clock)
    a, b = join(s, "ann", "ben")
    image = s.current(a)
    assert s.current(b) is None                                    # held by ann
    clock.t += 200
    s.heartbeat(a)                                                 # the open tab keeps it
    clock.t += 200
    assert s.current(b) is None
    clock.t += 400                                                 # ann's tab is gone
    assert s.current(b) == image
    s.submit(b, image, GOOD, 30)
    assert s.current(a) is None                                    # back later: filled by ben, released
    with pytest.raises(ClassError, match="not yours"):
        s.submit(a, image, GOOD, 30)
    assert [c.annotator for c in s.store.critiques()] == ["ben"]


def test_time_spent_is_what_the_page_measured_bounded_by_the_time_since_handed_out(make_session):
    clock = Clock()
    s = make_session(clock=clock)
    a, = join(s, "ann")
    image = s.current(a)
    clock.t += 40
    assert s.submit(a, image, GOOD, 33.3).seconds_spent == 33.3
    b, = join(s, "ben")
    image = s.current(b)
    clock.t += 5
    assert s.submit(b, image, GOOD, 9999).seconds_spent == 6.0     # at most the time since handed out
    with pytest.raises(ClassError, match="number of seconds"):
        s.submit(b, image, GOOD, "NaN")


def test_simultaneous_submits_and_hand_outs_from_many_threads(make_session):
    s = make_session(n_images=12, per_image=1)
    names = join(s, *[f"p{i}" for i in range(8)])
    got: dict[str, str | None] = {}
    barrier = threading.Barrier(len(names))

    def take(n):
        barrier.wait()
        got[n] = s.current(n)

    threads = [threading.Thread(target=take, args=(n,)) for n in names]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(got.values())) == len(names)                    # 8 different images, k = 1 respected
    image = got["p0"]
    barrier2 = threading.Barrier(4)
    errors = []

    def submit(i):
        barrier2.wait()
        try:
            s.submit("p0", image, {**GOOD, "suggestion": f"tab {i}"}, 5)
        except Exception as e:   # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]   # 4 tabs click at once
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert [c.image_id for c in s.store.critiques(annotator="p0")] == [image]  # one row, not four


def test_a_restarted_server_resumes_names_assignments_and_codes(tmp_path, make_session):
    s = make_session()
    name, token = s.claim("Alice", None)
    image = s.current(name)
    join_code = s.code("join_code")
    s.store.close()
    again = make_session()                                         # a new process on the same store
    assert again.who(token) == "Alice" and again.current("Alice") == image
    assert again.code("join_code") == join_code


# --- the app, through Starlette's test client ---------------------------------------------

@pytest.fixture
def app_client(tmp_path):
    from starlette.testclient import TestClient

    from aes_lib.collect.serve import create_app

    images = make_images(tmp_path / "data", 3)
    outside = tmp_path / "secret.png"
    shutil.copy(tmp_path / "data" / "images" / "im0.png", outside)
    (tmp_path / "data" / "images" / "im2.png").unlink()
    (tmp_path / "data" / "images" / "im2.png").symlink_to(outside)     # a link out of the image folder
    store = CritiqueStore(tmp_path / "critiques.db")
    session = ClassSession(store, images, PROTOCOL, per_image=1)
    app = create_app(session, tmp_path / "data", "join-abcd", "teach-wxyz", tmp_path)

    def client(join=True):
        c = TestClient(app, base_url="http://127.0.0.1")
        if join:
            c.cookies.set("aes_join", "join-abcd")
        return c

    yield client, session
    store.close()


def test_without_the_join_code_there_is_no_page_no_image_and_no_store(app_client):
    client, session = app_client
    c = client(join=False)
    for path in ("/", "/static/annotate.js", "/api/state", "/api/protocol", "/api/image/im0",
                 "/api/critique/im0", "/api/teacher"):
        r = c.get(path)
        assert r.status_code == 403, path
        assert "annotate.js" not in r.text and "im0" not in r.text
    assert c.post("/api/name", json={"name": "Mallory"}).status_code == 403
    assert c.post("/join", data={"code": "guess"}).status_code == 403
    assert session.overview()["annotators"] == []
    r = c.get("/?join=join-abcd", follow_redirects=False)          # the printed address sets the code
    assert r.status_code == 303 and "aes_join=join-abcd" in r.headers["set-cookie"]
    assert c.get("/api/protocol").status_code == 200


def test_annotators_see_only_their_images_and_critiques_and_images_only_from_the_folder(app_client):
    client, session = app_client
    alice, bob = client(), client()
    assert alice.post("/api/name", json={"name": "Alice"}).status_code == 200
    assert bob.post("/api/name", json={"name": "Bob"}).status_code == 200
    mine = alice.get("/api/state").json()["image"]
    assert alice.get(mine["url"]).headers["content-type"] == "image/png"
    assert bob.get(mine["url"]).status_code == 404                     # not handed to bob
    ans = alice.post("/api/submit", json={"image_id": mine["id"], "answers": GOOD, "seconds": 1})
    assert ans.status_code == 200
    assert alice.get(f"/api/critique/{mine['id']}").json()["description"] == GOOD["description"]
    assert bob.get(f"/api/critique/{mine['id']}").status_code == 404   # alice's critique, not bob's
    assert bob.post("/api/submit", json={"image_id": mine["id"], "answers": GOOD, "seconds": 1}).status_code == 403
    assert bob.get("/api/teacher").status_code == 403
    # im2 links out of the image folder: never served, the page says to flag it
    for who in (alice, bob):
        image = who.get("/api/state").json()["image"]
        if image and image["id"] == "im2":
            assert image["exists"] is False
            r = who.get(image["url"])
            assert r.status_code == 404 and "flag it as broken" in r.json()["error"]
            break
    else:
        pytest.fail("im2 was handed to nobody")


def test_bad_input_gets_a_clear_message(app_client):
    client, _ = app_client
    c = client()
    assert "type your name first" in c.get("/api/state").json()["error"]
    assert "letters, digits" in c.post("/api/name", json={"name": "<b>x</b>"}).json()["error"]
    c.post("/api/name", json={"name": "Carol"})
    image = c.get("/api/state").json()["image"]["id"]
    r = c.post("/api/submit", content=b'{"image_id": "' + image.encode() + b'", "answers": {' + b" " * 70_000 + b"}}",
               headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["error"]
    r = c.post("/api/submit", content=b"grade=good", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "JSON" in r.json()["error"]
    r = c.post("/api/submit", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "valid JSON" in r.json()["error"]
    r = c.post("/api/submit", json={"image_id": image, "answers": {**GOOD, "description": "short"}, "seconds": 1})
    assert r.status_code == 422 and r.json()["problems"] == ["the description needs at least 8 words (has 1)"]
    r = c.post("/api/check", json={"step": "grade", "answers": {}})
    assert r.status_code == 422 and r.json()["error"] == "choose an overall grade"


def test_the_teacher_view_counts_and_agreement(app_client):
    client, session = app_client
    for name, grade in (("Ann", "good"), ("Ben", "fair"), ("Cy", "excellent")):
        c = client()
        c.post("/api/name", json={"name": name})
        image = c.get("/api/state").json()["image"]["id"]
        c.post("/api/submit", json={"image_id": image, "answers": {**GOOD, "grade": grade}, "seconds": 2})
    t = client(join=False)                                             # the teacher code alone is enough
    assert t.get("/teacher").status_code == 403
    assert t.get("/teacher?code=wrong").status_code == 403
    page = t.get("/teacher?code=teach-wxyz")
    assert page.status_code == 200 and "Per annotator" in page.text and "aes collect export" in page.text
    o = t.get("/api/teacher").json()
    assert o["critiques"] == 3 and {r["annotator"]: r["critiques"] for r in o["annotators"]} == \
        {"Ann": 1, "Ben": 1, "Cy": 1}
    assert o["agreement"]["grade"] is None                             # one critique per image: undefined


# --- start-up faults ------------------------------------------------------------------------

def run_serve(args, timeout=60):
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", "collect", "serve", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_read_only_store_is_a_clear_error_at_start(tmp_path, mini_dataset):
    """The store on a read-only disk (a read-only bind mount, which binds root too)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to mount a read-only folder")
    out = tmp_path / "ro"
    store = CritiqueStore(out / "critiques" / "critiques.db")
    store.close()
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here: " + probe.stderr.decode()[:200])
    cmd = (f"mount --bind {out} {out} && mount -o remount,bind,ro {out} && exec {sys.executable} -m aes_lib.cli "
           f"collect serve --data {mini_dataset.parent} --out {out} --port 0")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "the critique store cannot be written" in line and str(out / "critiques" / "critiques.db") in line
    assert "read-only" in line
    assert "Traceback" not in r.stderr


def test_a_missing_manifest_and_a_bad_per_image_are_clear_errors(tmp_path, mini_dataset):
    r = run_serve(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert r.returncode == 2 and "manifest.json" in r.stderr and "Traceback" not in r.stderr
    r = run_serve(["--data", str(mini_dataset.parent), "--out", str(tmp_path), "--per-image", "0"])
    assert r.returncode == 2 and "--per-image must be at least 1" in r.stderr
    r = run_serve(["--data", str(mini_dataset.parent), "--out", str(tmp_path), "--join-code", "ab"])
    assert r.returncode == 2 and "--join-code" in r.stderr
