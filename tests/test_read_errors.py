"""Every JSON, JSON-lines and YAML input is read by one helper (aes_lib.io): a file nested
100,000 levels deep, one that is not UTF-8, an image key given twice, a YAML alias bomb, or a
full disk is one line naming the file and exit 2, never a traceback or a hang. Real `aes`
processes on real files."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from generate_fixtures import make_inputs

DEEP = "[" * 100_000 + "]" * 100_000
LATIN1 = "caf\xe9".encode("latin-1")
BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
               for p, c in zip([""] + list("abcdefgh"), "abcdefghi"))   # 9^9 = 387M values expanded


def aes(*args: str, cwd: Path = REPO, limit_bytes: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    def limit():   # a full disk, for this process only: writes past the limit fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=limit if limit_bytes else None)


def one_line_naming(proc: subprocess.CompletedProcess, path: Path, *words: str) -> None:
    lines = [line for line in proc.stderr.strip().splitlines()   # progress bars and INFO lines aside
             if not line.startswith(("INFO ", "photos:"))]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    assert str(path) in lines[0] and all(w in lines[0] for w in words), lines[0]


@pytest.fixture
def scored(tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"nat_001.jpg": {"AesP_answer": "A"}, "art_002.png": {"AesP_answer": "B"}}))
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"nat_001.jpg": {"AesP_response": "A"}, "art_002.png": {"AesP_response": "B"}}))
    return key, responses


def _score(key: Path, responses: Path) -> subprocess.CompletedProcess:
    return aes("evaluate", "score", "--responses", str(responses), "--key", str(key), "--out", str(key.parent / "o"))


def test_the_score_inputs_as_they_should_be_score(scored):
    key, responses = scored
    assert _score(key, responses).returncode == 0   # so the failures below are the files' faults


@pytest.mark.parametrize("which", ["key", "responses"])
def test_deep_json_names_the_file(scored, which):
    key, responses = scored
    bad = key if which == "key" else responses
    bad.write_text(DEEP)
    one_line_naming(_score(key, responses), bad, "nested too deeply")


@pytest.mark.parametrize("which", ["key", "responses"])
def test_non_utf8_names_the_file(scored, which):
    key, responses = scored
    bad = key if which == "key" else responses
    bad.write_bytes(bad.read_bytes().replace(b"nat_001", LATIN1))
    one_line_naming(_score(key, responses), bad, "not UTF-8")


@pytest.mark.parametrize("which", ["key", "responses"])
def test_an_image_given_twice_is_refused_naming_file_and_key(scored, which):
    key, responses = scored
    bad = key if which == "key" else responses
    field = "AesP_answer" if which == "key" else "AesP_response"
    bad.write_text('{"nat_001.jpg": {"%s": "A"}, "art_002.png": {"%s": "B"}, "nat_001.jpg": {"%s": "B"}}'
                   % (field, field, field))
    one_line_naming(_score(key, responses), bad, "'nat_001.jpg'", "twice")


def test_data_verify_of_a_deep_manifest(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(DEEP)
    one_line_naming(aes("data", "verify", str(manifest)), manifest, "nested too deeply")


def test_generate_critiques_deep_and_not_utf8(tmp_path):
    make_inputs(tmp_path, n_photos=2, per_image=1)
    critiques = tmp_path / "critiques" / "critiques.jsonl"
    good = critiques.read_bytes()
    for content, words in ((good + DEEP.encode() + b"\n", ("nested too deeply",)),
                           (good.replace(b"hello", LATIN1, 1), ("not UTF-8",))):
        critiques.write_bytes(content)
        proc = aes("generate", "--out", str(tmp_path), "--critiques", str(critiques), "--no-progress")
        one_line_naming(proc, critiques, *words)


def test_generate_config_not_utf8_and_alias_bomb(tmp_path):
    make_inputs(tmp_path, n_photos=2, per_image=1)
    config = tmp_path / "cfg.yaml"
    config.write_bytes(b"generate:\n  seed: 1\n# " + LATIN1 + b"\n")
    one_line_naming(aes("generate", "--out", str(tmp_path), "--config", str(config), "--no-progress"), config,
                    "not UTF-8")
    config.write_text("generate:\n  seed: 1\n" + BOMB)
    t0 = time.monotonic()
    proc = aes("generate", "--out", str(tmp_path), "--config", str(config), "--no-progress", timeout=60)
    one_line_naming(proc, config, "aliases")
    assert time.monotonic() - t0 < 30 and len(proc.stderr) < 500   # refused at once, no huge value shown


def test_a_profile_alias_bomb_is_refused_before_anything_runs(tmp_path):
    profile = tmp_path / "bomb.yaml"
    profile.write_text("common:\n  seed: 0\n" + BOMB)
    proc = aes("reproduce", "--profile", str(profile), "--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode != 0 and str(profile) in proc.stderr and "aliases" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_evaluate_run_with_a_deep_benchmark(tmp_path):
    bench = tmp_path / "benchmark.jsonl"
    bench.write_text(DEEP + "\n")
    proc = aes("evaluate", "run", "--bench", str(bench), "--model", "none", "--name", "x",
               "--out-dir", str(tmp_path / "o"))
    one_line_naming(proc, bench, "nested too deeply")


def test_a_full_disk_names_the_file_in_data_build(tmp_path):
    out = tmp_path / "data"
    proc = aes("data", "build", "--out", str(out), "--max-side", "64", "--photos", "astronaut", "coffee",
               limit_bytes=4000)
    one_line_naming(proc, out, "File too large")


def test_a_full_disk_in_collect_import_says_so(tmp_path):
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    rows = ["image,grade,description,annotator"]
    for i in range(300):
        Image.new("RGB", (4, 4), (i % 255, 0, 0)).save(images / f"im{i}.png")
        rows.append(f"im{i}.png,good,{'A calm scene with soft light and a clear subject. ' * 8},ann")
    (tmp_path / "lab.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    proc = aes("collect", "import", str(tmp_path / "lab.csv"), "--format", "csv", "--images", str(images),
               "--out", str(out), limit_bytes=60_000)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "no transaction is active" not in proc.stderr and str(out) in proc.stderr, proc.stderr
    assert "not stored" in proc.stderr or "critiques.db" in proc.stderr, proc.stderr
    assert any(w in proc.stderr for w in ("full", "too large", "I/O error")), proc.stderr


def test_a_full_store_names_the_cause_and_the_file_not_a_failed_rollback(tmp_path):
    """SQLite rolls a transaction back by itself when the database is full; rolling back again
    used to raise "cannot rollback - no transaction is active" and hide why the import failed."""
    import sqlite3

    from aes_lib.collect.store import CritiqueStore
    from aes_lib.schema import Critique, read_jsonl

    make_inputs(tmp_path, n_photos=6, per_image=2)
    critiques = read_jsonl(tmp_path / "critiques" / "critiques.jsonl", Critique)
    for c in critiques:
        c.description += " and more" * 1000
    with CritiqueStore(tmp_path / "critiques.db") as store:
        store._con.execute("PRAGMA max_page_count = 8")   # the database is full after 8 pages
        with pytest.raises(sqlite3.OperationalError) as e:
            with store.transaction():
                store.add_imported(critiques, "lab")
        assert str(tmp_path / "critiques.db") in str(e.value) and "full" in str(e.value)
        assert store.count() == 0   # nothing of the failed import stays
