import subprocess
import sys
import time

from conftest import REPO


def _aes(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_help_lists_the_stages():
    proc = _aes("--help")
    assert proc.returncode == 0
    for command in ("reproduce", "data"):
        assert command in proc.stdout


def test_data_build_and_verify(tmp_path):
    proc = _aes("data", "build", "--out", str(tmp_path / "d"), "--max-side", "48", "--photos", "coffee", "rocket",
                "china", "flower")
    assert proc.returncode == 0, proc.stderr
    assert "images written" in proc.stdout
    proc = _aes("data", "verify", str(tmp_path / "d" / "manifest.json"))
    assert proc.returncode == 0 and "images OK" in proc.stdout


def test_user_errors_are_one_clear_line(tmp_path):
    proc = _aes("data", "verify", str(tmp_path / "missing.json"))
    assert proc.returncode == 2
    assert "missing.json: file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_import_is_fast_and_light():
    code = ("import time, sys; t = time.perf_counter(); import aes_lib.cli; aes_lib.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'matplotlib', 'pandas', 'openai') if m in sys.modules]; "
            "print(time.perf_counter() - t, heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds, heavy = proc.stdout.split(" ", 1)
    assert heavy.strip() == "[]", f"heavy libraries imported at aes_lib import: {heavy}"
