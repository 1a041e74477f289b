"""`aes reproduce` and the folder it writes: --force-clear moves a user's files aside, one run at
a time per folder, and SIGINT/SIGTERM/kill -9 stop the notebook's child and kernel and leave an
honest manifest. Real runner processes, real kernels, real signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

pytestmark = pytest.mark.slow


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell('out_dir = "outputs"\nseed = 0')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


#: a notebook that records its kernel's pid, then writes a heartbeat every 0.2 s until told to stop
SLOW = ("import os, time\nfrom pathlib import Path\nPath(out_dir).mkdir(exist_ok=True)\n"
        "Path(out_dir, 'kernel.pid').write_text(str(os.getpid()))\n"
        "for i in range(600):\n"
        "    Path(out_dir, 'heartbeat.txt').write_text(str(i))\n"
        "    if Path(out_dir, '.stop').exists(): break\n"
        "    time.sleep(0.2)\n")


@pytest.fixture
def chain(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_first.ipynb", "from pathlib import Path\nPath(out_dir).mkdir(exist_ok=True)\n"
                                      "Path(out_dir, 'first.txt').write_text('x')")
    _notebook(nbs / "01_slow.ipynb", SLOW)
    _notebook(nbs / "02_report.ipynb", "from pathlib import Path\n"
                                       "Path(out_dir, 'index.html').write_text('<p>run</p>')\n"
                                       "Path(out_dir, 'figures').mkdir(exist_ok=True)\n"
                                       "Path(out_dir, 'figures', 'fig_1.png').write_text('run')")
    (tmp_path / "p.yaml").write_text("{}")
    return tmp_path


@pytest.fixture
def reaper():
    """Processes a failing test would leave behind (runners, kernels): stopped at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def _cmd(chain: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aes_lib.cli", "reproduce", "--profile", str(chain / "p.yaml"),
            "--notebooks", str(chain / "notebooks"), "--out", str(out), "--timeout", "120", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _wait_for(path: Path, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.1)


def _start(chain: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(chain, out, *extra), cwd=chain, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _gone(pid: int, seconds: float = 15) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def test_force_clear_moves_the_users_files_aside_and_says_where(chain):
    out = chain / "mine"
    mine = {"figures/fig_1.png": b"my figure", "tables/table_budget.csv": b"my,budget\n",
            "index.html": b"<p>my page</p>", "report.json": b"{\"mine\": 1}", "notes.txt": b"keep"}
    for rel, data in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    (out / ".stop").write_text("")   # the slow notebook ends at once
    proc = subprocess.run(_cmd(chain, out, "--force-clear"), cwd=chain, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    aside = [p for p in out.iterdir() if p.name.startswith("aes-moved-aside-")]
    assert len(aside) == 1 and str(aside[0]) in proc.stderr
    for rel, data in mine.items():   # nothing of the user's is lost: moved or untouched
        where = out / rel if rel == "notes.txt" else aside[0] / rel
        assert where.read_bytes() == data, rel
    assert (out / "index.html").read_text() == "<p>run</p>"   # the run wrote its own
    assert not (out / "tables").exists()


def test_a_second_run_into_a_held_folder_is_refused_and_a_killed_run_leaves_no_lock(chain, reaper):
    out = chain / "out"
    first = _start(chain, out)
    reaper.append(first.pid)
    try:
        _wait_for(out / "kernel.pid")
        kernel = int((out / "kernel.pid").read_text())
        reaper.append(kernel)
        second = subprocess.run(_cmd(chain, out), cwd=chain, env=_env(), capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and f"process {first.pid}" in lines[0], second.stderr
        assert (out / "first.txt").exists() and (out / "kernel.pid").exists()   # nothing of the first run deleted
        os.kill(first.pid, signal.SIGKILL)   # no clean-up at all in the runner
        first.wait(timeout=30)
        assert _gone(kernel), "the kernel of a killed run kept running"
        manifest = json.loads((out / "run_manifest.json").read_text()) if (out / "run_manifest.json").exists() else {}
        assert manifest.get("status") != "ok"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    (out / ".stop").write_text("")
    third = subprocess.run(_cmd(chain, out), cwd=chain, env=_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr   # the killed run's lock went with it
    assert json.loads((out / "run_manifest.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_notebook_and_its_kernel_and_marks_the_manifest(chain, signum, code, reaper):
    out = chain / "out"
    (out).mkdir()
    (out / ".stop").write_text("")
    assert subprocess.run(_cmd(chain, out), cwd=chain, env=_env(), capture_output=True, timeout=300).returncode == 0
    assert json.loads((out / "run_manifest.json").read_text())["status"] == "ok"
    (out / ".stop").unlink()
    (out / "kernel.pid").unlink()
    runner = _start(chain, out)
    reaper.append(runner.pid)
    _wait_for(out / "kernel.pid")
    kernel = int((out / "kernel.pid").read_text())
    reaper.append(kernel)
    _wait_for(out / "heartbeat.txt")
    runner.send_signal(signum)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == code, err
    lines = err.strip().splitlines()
    after = lines[[i for i, line in enumerate(lines) if "01_slow.ipynb ..." in line][0] + 1:]
    assert len(after) == 1 and "01_slow" in after[0] and "Traceback" not in err, err   # one line
    assert _gone(kernel), "the kernel kept running after the runner stopped"
    beat = (out / "heartbeat.txt").read_text()
    time.sleep(1.0)
    assert (out / "heartbeat.txt").read_text() == beat   # nothing writes into the folder any more
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["interrupted"] == {"notebook": "01_slow", "signal": signal.Signals(signum).name}
    by_name = {r["name"]: r for r in manifest["notebooks"]}
    assert by_name["01_slow"]["status"] == "interrupted" and by_name["02_report"]["status"] == "not run"
    assert "index.html" not in manifest["outputs"]   # the earlier run's report is not claimed as current
