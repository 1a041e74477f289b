"""`make clean` keeps the annotation store (critiques people made in the tool) and says so;
`make clean-all` deletes it too. Real make, real files."""

import shutil
import subprocess
from pathlib import Path

from conftest import REPO


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _make(root: Path, target: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", target], cwd=root, capture_output=True, text=True)


def test_make_clean_keeps_human_critiques_and_clean_all_deletes_them(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    files = ["outputs/README.md", "outputs/critiques/critiques.db", "outputs/critiques/critiques.db-wal",
             "outputs/critiques/critiques.jsonl", "outputs/data/images/a.png", "outputs/eval/results.csv",
             "outputs/.written-by-aes-companion", "outputs/run_manifest.json"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("people's work" if "critiques.db" in rel else "x")
    proc = _make(tmp_path, "clean")
    assert proc.returncode == 0, proc.stderr
    assert _tree(tmp_path / "outputs") == ["README.md", "critiques/critiques.db", "critiques/critiques.db-wal"]
    assert (tmp_path / "outputs/critiques/critiques.db").read_text() == "people's work"
    assert "kept outputs/critiques/critiques.db" in proc.stderr and "make clean-all" in proc.stderr
    proc = _make(tmp_path, "clean-all")
    assert proc.returncode == 0, proc.stderr
    assert _tree(tmp_path / "outputs") == ["README.md"] and "kept" not in proc.stderr
