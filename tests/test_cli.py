import subprocess
import sys
import time

from conftest import REPO


def _aes(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_help_lists_the_stages():
    proc = _aes("--help")
    assert proc.returncode == 0
    from aes_lib.cli import STAGE_MODULES

    for command in ("reproduce", "strip", *STAGE_MODULES[1:]):   # runner adds reproduce and strip
        assert f"    {command} " in proc.stdout or f"    {command}\n" in proc.stdout, command


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


MODEL_MODULES = ("aes_lib.vision",)


def test_every_module_imports_without_heavy_libraries():
    """``import aes_lib.<anything>`` must work with numpy/pyyaml/pillow only (GPU image, CLI), but for
    the modules that define torch models (``MODEL_MODULES``: their classes subclass torch's, and
    they are imported only where a model is built or loaded)."""
    code = ("import pkgutil, sys, importlib, aes_lib\n"
            f"names = [m.name for m in pkgutil.walk_packages(aes_lib.__path__, 'aes_lib.') if m.name not in {MODEL_MODULES!r}]\n"
            "for n in names: importlib.import_module(n)\n"
            "heavy = ('torch', 'transformers', 'peft', 'accelerate', 'matplotlib', 'pandas', 'openai',"
            " 'sklearn', 'scipy', 'ipywidgets')\n"
            "print(len(names), sorted(m for m in heavy if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    n, heavy = proc.stdout.strip().split(" ", 1)
    assert int(n) >= 30 and heavy == "[]", f"heavy libraries imported at module level: {heavy}"
