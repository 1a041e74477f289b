"""Run the numbered notebooks in order: ``aes reproduce`` (what ``make reproduce`` calls).

Each notebook runs with papermill in a fresh kernel whose working directory is fixed, under a
per-notebook time limit, with its cell output logged to ``<out>/logs/``. Parameters come from a
profile (``smoke``, ``cpu``, ``gpu`` or a YAML file); a key no notebook declares, or a value of
the wrong type, stops the run before anything executes. Executed copies go to
``<out>/notebooks/``; the run stops at the first failing notebook and names the failing cell.
At the end ``<out>/run_manifest.json`` records what ran, with what, and the hash of every file
this run's notebooks wrote (other files under ``<out>`` are listed by name).

Each run's outputs are its own. Every numbered notebook owns the files it writes
(:data:`OWNED_OUTPUTS`, by its two-digit number, and whatever the last manifest says it wrote);
before a notebook runs, the runner deletes them, so nothing a previous run left is shown or
hashed as this run's. A full run clears every notebook's outputs first; ``--from NN`` clears
NN and everything after it; ``--only`` clears only the notebooks it runs, and keeps the others'
files and manifest records, marked with the run that produced them. Stores of human work and
caches of paid requests (:data:`KEPT_FILES`) are never deleted, and neither is anything in the
project's folders that no stage writes (a user's ``data/my_photos/``), nor an executed copy or log
of a notebook outside the chain.

Clearing deletes only in a folder the project wrote (:func:`claim_output_folder`): a folder that
is not empty and holds no ``run_manifest.json`` (nor the mark the runner and the notebooks leave,
:data:`OUTPUT_MARK`), and not just the repository's ``outputs/README.md``, is refused with an
error naming it and nothing deleted, unless the user forces it (``aes reproduce --force-clear``),
which moves that folder's files at the run's paths aside (:func:`aes_lib.runguard.move_aside`).
One run at a time holds a folder; SIGINT/SIGTERM stop the notebook and its kernel and leave the
manifest ``interrupted`` (:mod:`aes_lib.runguard`).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import logging
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from aes_lib.io import decode_text, load_yaml, sha256_file, write_json
from aes_lib.runguard import (LOCK_INFO, FolderBusyError, Interrupted, RunLock, interrupt_signals,
                              move_aside, stop_process_tree)

log = logging.getLogger(__name__)

PROFILES = ("smoke", "cpu", "gpu")
#: Packages whose versions go into the run manifest.
RECORDED_PACKAGES = ("aes-lib", "torch", "transformers", "peft", "accelerate", "tokenizers", "openai",
                     "numpy", "pandas", "matplotlib", "scikit-image", "papermill", "nbclient", "ipykernel")


#: What each numbered notebook writes under the output folder (globs relative to it, matched one
#: path segment at a time; a final ``**`` = everything below): exactly the files its stage
#: writes, so a user's own files in the same folders (``data/my_photos/``) are never its.
#: The first matching pattern names the owner. The runner adds each
#: notebook's executed copy and log. Every notebook also clears its own at its start
#: (:func:`clear_outputs`), so running them one by one in JupyterLab leaves no stale files either.
OWNED_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("figures/fig_contact_sheet.*", "00"),
    ("figures/fig_collect_stats.*", "01"),
    ("data/images/*.png", "00"),
    ("data/manifest.json", "00"),
    *((f"critiques/{name}", "01") for name in (
        "critiques.db", "critiques.jsonl", "consensus.csv", "stats.json", "simulate_config.json",
        "rejects.jsonl", "import_summary.json")),
    *((f"instructions/{name}", "02") for name in (
        "instructions.jsonl", "llava_*.json", "messages_*.jsonl", "stats.json", "rejects.jsonl",
        "run.json", "refined.jsonl", "llm_cache.sqlite")),
    ("train/base_model/**", "03"),
    ("train/run/**", "03"),
    *((f"eval/{name}", "04") for name in (
        "benchmark.jsonl", "benchmark_config.json", "predictions_*.jsonl", "results_*.json",
        "results.csv", "config_*.json", "consensus_scores.json", "responses_*/**", "api_cache.db")),
    ("figures/fig_*.pdf", "05"),
    ("figures/fig_*.png", "05"),
    ("tables/table_*.csv", "05"),
    ("tables/table_*.md", "05"),
    ("tables/table_*.tex", "05"),
    ("index.html", "05"),
    ("index.md", "05"),
    ("report.json", "05"),
)
#: Never deleted: annotations people made in the tool, and caches of paid API requests (with
#: SQLite's companion files: a store open in a kernel keeps its latest writes in ``-wal``).
KEPT_FILES = ("critiques/critiques.db", "instructions/llm_cache.sqlite", "eval/api_cache.db",
              "README.md")
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
MANIFEST = "run_manifest.json"
#: Left in an output folder by the runner and by a notebook clearing its own files: the folder
#: is the project's, so clearing may delete the project's files in it.
OUTPUT_MARK = ".written-by-aes-companion"
#: What the project writes at the top of an output folder (beside :data:`OWNED_OUTPUTS`' folders).
PROJECT_TOP_NAMES = ("notebooks", "logs", MANIFEST, OUTPUT_MARK, "README.md", ".ipynb_checkpoints")
#: Files the operating system leaves in any folder it shows (never deleted, never decisive).
OS_LITTER = ("Thumbs.db", "desktop.ini")


class RunnerError(RuntimeError):
    """The run cannot start or a notebook failed; the message says which and why."""


class ForeignFolderError(RunnerError):
    """The output folder holds files the project did not write; nothing was deleted."""


# --- profiles ---------------------------------------------------------------------------------

def load_profile(profile: str | Path) -> tuple[str, dict[str, Any]]:
    """Return (name, raw profile) for a built-in profile name or a YAML file path."""
    path = Path(profile)
    if str(profile) in PROFILES:
        text = resources.files("aes_lib").joinpath(f"profiles/{profile}.yaml").read_text()
        name = str(profile)
    elif path.is_file():
        text, name = path.read_bytes(), path.stem
    else:
        raise RunnerError(f"profile {profile!r}: not one of {', '.join(PROFILES)} and no such file")
    try:   # not UTF-8, invalid YAML, alias bombs, duplicate keys: one error naming the file
        data = load_yaml(decode_text(text, str(path)) if isinstance(text, bytes) else text,
                         str(path) if isinstance(text, bytes) else f"profile {name}") or {}
    except ValueError as e:
        raise RunnerError(str(e)) from None
    if not isinstance(data, dict) or set(data) - {"common", "notebooks"}:
        raise RunnerError(f"profile {name!r}: top-level keys must be 'common' and 'notebooks', "
                          f"got {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    data.setdefault("common", {})
    data.setdefault("notebooks", {})
    for section in ("common", "notebooks"):
        if not isinstance(data[section] or {}, dict):
            raise RunnerError(f"profile {name!r}: '{section}' must be a mapping")
        data[section] = data[section] or {}
    return name, data


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Parameters declared in a notebook's ``parameters`` cell, as {name: default value}."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        return {}
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        params[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        raise RunnerError(f"{path}: parameter '{target.id}' must have a literal default") from None
    return params


def _same_type(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def resolve_parameters(profile: dict[str, Any], notebooks: list[Path], profile_name: str = "profile",
                       overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Check a profile against the notebooks' parameter cells; return parameters per notebook.

    Every key must be declared (common keys by at least one notebook, per-notebook keys by that
    notebook) and every value must have its default's type; the error names the key.
    """
    declared = {nb.stem: notebook_parameters(nb) for nb in notebooks}
    common = {**profile.get("common", {}), **(overrides or {})}
    problems = []
    for key, value in common.items():
        owners = [stem for stem, params in declared.items() if key in params]
        if not owners:
            problems.append(f"'{key}' (common): no notebook declares this parameter")
        for stem in owners:
            if not _same_type(value, declared[stem][key]):
                problems.append(f"'{key}' (common): {value!r} is {type(value).__name__}, "
                                f"{stem} expects {type(declared[stem][key]).__name__}")
    sections = profile.get("notebooks", {})
    for stem, section in sections.items():
        if stem not in declared:  # a typo in a section name would otherwise drop its settings
            problems.append(f"section '{stem}': no such notebook (known: {', '.join(declared)})")
            continue
        for key, value in (section or {}).items():
            if key not in declared[stem]:
                problems.append(f"'{key}' ({stem}): not a parameter of {stem} "
                                f"(known: {', '.join(sorted(declared[stem])) or 'none'})")
            elif not _same_type(value, declared[stem][key]):
                problems.append(f"'{key}' ({stem}): {value!r} is {type(value).__name__}, "
                                f"expected {type(declared[stem][key]).__name__}")
    if problems:
        raise RunnerError(f"profile {profile_name!r} has bad parameters:\n  " + "\n  ".join(problems))
    resolved = {}
    for stem, params in declared.items():
        mine = {k: v for k, v in common.items() if k in params}
        mine.update(sections.get(stem) or {})
        resolved[stem] = mine
    return resolved


# --- whose files ------------------------------------------------------------------------------

def _matches(rel: str, pattern: str) -> bool:
    """``rel`` matches ``pattern`` segment by segment (``*`` never crosses a ``/``); a final
    ``**`` matches one or more segments."""
    parts, wanted = rel.split("/"), pattern.split("/")
    if wanted[-1] == "**":
        wanted = wanted[:-1]
        if len(parts) <= len(wanted):
            return False
        parts = parts[:len(wanted)]
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted))


def owner_of(rel: str) -> str | None:
    """The two-digit number of the notebook that owns ``rel`` (a POSIX path under the output
    folder) by :data:`OWNED_OUTPUTS`, or ``None``."""
    for pattern, number in OWNED_OUTPUTS:
        if _matches(rel, pattern):
            return number
    return None


def _files(out_abs: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (mtime_ns, size)}`` of every file the notebooks may have written."""
    if not out_abs.is_dir():
        return {}
    found = {}
    for p in out_abs.rglob("*"):
        rel = p.relative_to(out_abs).as_posix()
        if p.is_file() and rel not in (MANIFEST, OUTPUT_MARK, LOCK_INFO) and not rel.startswith("logs/"):
            st = p.stat()
            found[rel] = (st.st_mtime_ns, st.st_size)
    return found


def _remove(out_abs: Path, rels: list[str]) -> int:
    """Delete these files under ``out_abs`` (never a kept file, never outside the folder, even
    when a hand-edited manifest names one), then the folders left empty."""
    removed = 0
    rels = [r for r in set(rels) if not Path(r).is_absolute() and ".." not in Path(r).parts]
    for rel in sorted(rels):
        if rel == OUTPUT_MARK or any(rel in (kept, *(kept + c for c in SQLITE_COMPANIONS))
                                     for kept in KEPT_FILES):
            continue
        path = out_abs / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
    for folder in sorted({(out_abs / r).parent for r in rels}, key=lambda p: -len(p.parts)):
        while folder != out_abs and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return removed


def _deciding_entries(out_abs: Path) -> set[str]:
    """The names at the top of ``out_abs`` that say whose folder it is: all but OS litter
    (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``) and dot-files other than the mark."""
    if not out_abs.is_dir():
        return set()
    return {p.name for p in out_abs.iterdir()
            if p.name not in OS_LITTER and (p.name == OUTPUT_MARK or not p.name.startswith("."))}


def _project_layout(out_abs: Path) -> bool:
    """Every entry at the top of ``out_abs`` is a name the project writes there."""
    names = {pattern.split("/")[0] for pattern, _ in OWNED_OUTPUTS} | set(PROJECT_TOP_NAMES)
    return _deciding_entries(out_abs) <= names


def claim_output_folder(out_dir: str | Path, force: bool = False, layout_ok: bool = False) -> Path:
    """Make sure clearing under ``out_dir`` can only delete the project's files, then leave
    :data:`OUTPUT_MARK` in it (creating the folder). Returns the folder.

    The folder passes when it does not exist, is empty, holds only ``README.md`` (the
    repository's ``outputs/README.md``), or holds ``run_manifest.json`` or the mark. With
    ``layout_ok`` (a notebook clearing itself, perhaps after earlier notebooks were run one by
    one in JupyterLab, which write no manifest) it also passes when every entry at its top is a
    name the project writes (``data``, ``eval``, ``figures``, ..., see :data:`OWNED_OUTPUTS`).
    Otherwise it raises :class:`ForeignFolderError` naming the folder, unless ``force``."""
    out_abs = Path(out_dir)
    if out_abs.exists() and not out_abs.is_dir():
        raise ForeignFolderError(f"{out_abs}: output folder is a file; nothing deleted")
    entries = _deciding_entries(out_abs)
    ours = (entries <= {"README.md"} or MANIFEST in entries or OUTPUT_MARK in entries
            or (layout_ok and _project_layout(out_abs)))
    if not ours and not force:
        raise ForeignFolderError(
            f"{out_abs}: not empty and not written by this project (no {MANIFEST}); nothing deleted. "
            "Choose an empty or new output folder, or clear it anyway with "
            "`aes reproduce --force-clear` (clear_outputs(..., force=True) in a notebook)")
    if not ours:   # forced: the user's files the run would delete or overwrite are moved, not lost
        move_aside(out_abs, _would_touch(out_abs))
    out_abs.mkdir(parents=True, exist_ok=True)
    (out_abs / OUTPUT_MARK).touch()
    return out_abs


def _would_touch(out_abs: Path) -> list[str]:
    """Files under ``out_abs`` a run may delete or overwrite: every path a notebook owns
    (:data:`OWNED_OUTPUTS`, kept stores included: a run writes into them), the numbered
    notebooks' executed copies and logs, the manifest."""
    if not out_abs.is_dir():
        return []
    rels = [p.relative_to(out_abs).as_posix() for p in out_abs.rglob("*") if p.is_file() or p.is_symlink()]
    return [rel for rel in rels if owner_of(rel) is not None or rel == MANIFEST
            or any(_matches(rel, g) for g in ("notebooks/[0-9][0-9]_*.ipynb", "logs/[0-9][0-9]_*.log"))]


def clear_outputs(out_dir: str | Path, notebook: str, produced_by: dict[str, str] | None = None,
                  runner_files: bool = False, force: bool = False) -> int:
    """Delete what ``notebook`` (a stem like ``04_evaluate`` or its number) writes under
    ``out_dir``: the files :data:`OWNED_OUTPUTS` gives it, those ``produced_by`` (a manifest's
    ``{path: notebook stem}``) attributes to it and, with ``runner_files``, its executed copy and
    log. Kept files (:data:`KEPT_FILES`) stay. Returns how many files were deleted.

    Every notebook calls it on itself at its start (so a run in JupyterLab is clean too). It
    deletes nothing in a folder that is not the project's (:func:`claim_output_folder`, with
    ``layout_ok``): it raises :class:`ForeignFolderError` instead, unless ``force``."""
    out_abs = claim_output_folder(out_dir, force=force, layout_ok=True)
    number = notebook[:2]
    rels = [rel for rel in _files(out_abs) if owner_of(rel) == number]
    rels += [rel for rel, stem in (produced_by or {}).items() if stem[:2] == number]
    if runner_files:
        rels += [f"notebooks/{notebook}.ipynb", f"logs/{notebook}.log"]
    removed = _remove(out_abs, rels)
    if removed:
        log.info("cleared %d file(s) %s wrote before under %s", removed, notebook, out_abs)
    return removed


def _previous_manifest(out_abs: Path) -> dict[str, Any]:
    path = out_abs / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); records of notebooks not rerun are lost", path, e)
        return {}
    return data if isinstance(data, dict) else {}


# --- running ----------------------------------------------------------------------------------

def find_notebooks(folder: Path, start: str | None = None, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` in ``folder``, in order, filtered by number."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunnerError(f"{folder}: notebook folder not found")
    notebooks = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    numbers = {p.name[:2] for p in notebooks}
    for n in [start] if start else []:
        if n.zfill(2) not in numbers:
            raise RunnerError(f"--from {n}: no notebook {n.zfill(2)}_*.ipynb in {folder}")
    for n in only or []:
        if n.zfill(2) not in numbers:
            raise RunnerError(f"--only {n}: no notebook {n.zfill(2)}_*.ipynb in {folder}")
    if start:
        notebooks = [p for p in notebooks if p.name[:2] >= start.zfill(2)]
    if only:
        notebooks = [p for p in notebooks if p.name[:2] in {n.zfill(2) for n in only}]
    if not notebooks:
        raise RunnerError(f"{folder}: no numbered notebooks to run")
    return notebooks


def _execute(nb_in: str, nb_out: str, params: dict, cwd: str, log_path: str, cell_timeout: int,
             result_path: str) -> None:
    """Child process: run one notebook with papermill, write the outcome to ``result_path``."""
    os.setsid()  # own process group, so a timeout kills the kernel too
    os.environ["AES_NOTEBOOK_BATCH"] = "1"   # aes_lib.nb.setup: text progress bars (this child only)
    os.environ["AES_KERNEL_CWD_CHOSEN"] = "1"   # aes_lib.nb.setup: keep the folder (--cwd) we start it in
    from aes_lib.runguard import child_setup

    child_setup()   # a signal, or the runner's death, stops this child and its kernel
    import papermill as pm

    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    pm_log = logging.getLogger("papermill")
    pm_log.addHandler(handler)
    pm_log.setLevel(logging.INFO)
    pm_log.propagate = False  # cell output goes to the log file; the console keeps progress lines
    from traitlets.config import Config

    # IPC sockets: a local kernel needs no TCP, and ipykernel warns about unencrypted TCP
    kernel_config = Config({"KernelManager": {"transport": "ipc"}})
    outcome: dict[str, Any] = {"ok": True}
    try:
        # "python3" is the kernel of this very interpreter, whatever kernel the notebook declares
        # (the notebooks declare aes-companion, which `make lab` registers for JupyterLab)
        pm.execute_notebook(nb_in, nb_out, parameters=params, cwd=cwd, kernel_name="python3",
                            log_output=True, progress_bar=False, execution_timeout=cell_timeout,
                            config=kernel_config)
    except pm.PapermillExecutionError as e:
        outcome = {"ok": False, "cell_index": e.cell_index, "exec_count": e.exec_count,
                   "source": e.source, "ename": e.ename, "evalue": e.evalue}
    except Exception as e:  # kernel died, bad notebook, ...
        outcome = {"ok": False, "ename": type(e).__name__, "evalue": str(e)}
    Path(result_path).write_text(json.dumps(outcome))


@dataclass
class NotebookRun:
    name: str
    seconds: float
    ok: bool
    output: str
    log: str
    error: dict[str, Any] = field(default_factory=dict)


def run_notebook(nb: Path, out_dir: Path, params: dict[str, Any], cwd: Path, timeout: int) -> NotebookRun:
    executed = out_dir / "notebooks" / nb.name
    log_path = out_dir / "logs" / f"{nb.stem}.log"
    result_path = out_dir / "logs" / f".{nb.stem}.result.json"
    for p in (executed, log_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    start = time.monotonic()
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    proc = ctx.Process(target=_execute, args=(str(nb), str(executed), params, str(cwd), str(log_path),
                                               timeout, str(result_path)))
    proc.start()
    try:
        proc.join(timeout)
    except Interrupted:   # SIGINT/SIGTERM to the runner: stop the child and its kernel first
        stop_process_tree(proc.pid)
        proc.join()
        raise
    if proc.is_alive():
        stop_process_tree(proc.pid, grace=2.0)   # the kernel too: it runs in a session of its own
        proc.join()
        error = {"ename": "Timeout", "evalue": f"{nb.name} ran longer than its {timeout} s limit"}
        return NotebookRun(nb.stem, time.monotonic() - start, False, str(executed), str(log_path), error)
    seconds = time.monotonic() - start
    if not result_path.exists():
        error = {"ename": "RunnerError", "evalue": f"papermill exited with code {proc.exitcode} and no result"}
        return NotebookRun(nb.stem, seconds, False, str(executed), str(log_path), error)
    outcome = json.loads(result_path.read_text())
    result_path.unlink()
    ok = outcome.pop("ok")
    return NotebookRun(nb.stem, seconds, ok, str(executed), str(log_path), outcome)


def describe_failure(run: NotebookRun) -> str:
    e = run.error
    lines = [f"{run.name} failed: {e.get('ename', 'Error')}: {e.get('evalue', '')}"]
    if "cell_index" in e:
        lines.append(f"failing cell (index {e['cell_index']}, execution count {e.get('exec_count')}):")
        lines += ["    " + line for line in (e.get("source") or "").splitlines()]
    lines.append(f"executed copy: {run.output}")
    lines.append(f"cell output log: {run.log}")
    return "\n".join(lines)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(cwd: Path) -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the git tree at ``cwd``; ``("unknown", None)`` outside one.
    Dirty means tracked files differ from the commit."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True).stdout.strip()
        return sha, bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None


def committed_parameters_and_cells(nb: Path, cwd: Path) -> tuple[dict[str, Any], list[tuple[str, str]]] | None:
    """(parameters, [(cell type, source)]) of the committed version of notebook ``nb`` (git
    ``HEAD``); None outside a git tree or when the notebook is not committed."""
    import nbformat

    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip()
        rel = Path(nb).resolve().relative_to(Path(top).resolve()).as_posix()
        text = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=top, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    old = nbformat.reads(text, as_version=4)
    tmp_params: dict[str, Any] = {}
    cells = [c for c in old.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if cells:
        for node in ast.parse(cells[0].source).body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        try:
                            tmp_params[target.id] = ast.literal_eval(node.value)
                        except ValueError:
                            pass
    return tmp_params, [(c.cell_type, c.source) for c in old.cells]


def notebook_edits(nb: Path, cwd: Path) -> dict[str, Any] | None:
    """How notebook ``nb`` differs from its committed version (JupyterLab autosaves a student's
    edits into ``notebooks/``): ``{"cells": [indices of changed cells], "parameters": {name:
    {"committed": v, "now": v}}}``, or None when it does not differ or cannot be compared."""
    import nbformat

    committed = committed_parameters_and_cells(nb, cwd)
    if committed is None:
        return None
    old_params, old_cells = committed
    now = nbformat.read(nb, as_version=4)
    new_cells = [(c.cell_type, c.source) for c in now.cells]
    changed = [i for i in range(max(len(old_cells), len(new_cells)))
               if (old_cells[i] if i < len(old_cells) else None) != (new_cells[i] if i < len(new_cells) else None)]
    if not changed:
        return None
    new_params = notebook_parameters(nb)
    params = {k: {"committed": old_params.get(k), "now": new_params.get(k)}
              for k in sorted(set(old_params) | set(new_params)) if old_params.get(k) != new_params.get(k)}
    return {"cells": changed, "parameters": params}


def _shown_path(nb: Path, cwd: Path) -> str:
    try:
        return Path(nb).resolve().relative_to(Path(cwd).resolve()).as_posix()
    except ValueError:
        return str(nb)


def _record(run: NotebookRun, run_id: str, profile: str, out_abs: Path) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": run.name, "status": "ok" if run.ok else "failed", "ok": run.ok,
                           "run_id": run_id, "profile": profile, "seconds": round(run.seconds, 1),
                           "executed": str(Path(run.output).relative_to(out_abs)),
                           "log": str(Path(run.log).relative_to(out_abs))}
    if not run.ok:
        e = run.error
        rec["error"] = {k: e[k] for k in ("ename", "evalue", "cell_index", "exec_count", "source") if k in e}
    return rec


def reproduce(profile: str | Path = "cpu", notebooks_dir: str | Path = "notebooks",
              out_dir: str | Path = "outputs", cwd: str | Path = ".", start: str | None = None,
              only: list[str] | None = None, timeout: int = 1800,
              overrides: dict[str, Any] | None = None, force_clear: bool = False) -> dict[str, Any]:
    """Run the chain; return the run manifest. Raises :class:`RunnerError` on the first failure
    (after writing the manifest, which then names the failing cell and the notebooks not run),
    and :class:`ForeignFolderError`, before anything runs or is deleted, when ``out_dir`` is not
    the project's (:func:`claim_output_folder`) and ``force_clear`` is not set.

    The run holds ``out_dir`` (:class:`~aes_lib.runguard.RunLock`): a second run into it raises
    :class:`~aes_lib.runguard.FolderBusyError` naming the holder, before anything is deleted.
    SIGINT/SIGTERM stop the notebook's child and kernel, write the manifest with status
    ``interrupted`` (naming the notebook) and raise :class:`~aes_lib.runguard.Interrupted`."""
    cwd_abs = Path(cwd).resolve()
    out_abs = Path(out_dir) if Path(out_dir).is_absolute() else cwd_abs / out_dir
    existed = out_abs.exists()
    with interrupt_signals():
        lock = RunLock(out_abs).acquire()
        try:
            if (out_abs / MANIFEST).is_file():   # until this run's manifest: the old one is not current
                _mark_manifest(out_abs, "running")
            return _reproduce(profile, notebooks_dir, out_dir, cwd, start, only, timeout, overrides,
                              force_clear)
        except Interrupted as stop:
            if not getattr(stop, "manifest_written", False) and (out_abs / MANIFEST).is_file():
                _mark_manifest(out_abs, "interrupted", {"notebook": None, "signal": stop.name})
            raise
        finally:
            lock.release()
            if not existed and out_abs.is_dir() and not any(out_abs.iterdir()):
                out_abs.rmdir()   # a run refused before writing leaves no empty folder behind


def _mark_manifest(out_abs: Path, status: str, interrupted: dict | None = None) -> None:
    """Set the status of the manifest in ``out_abs`` (an earlier run's, while this one clears
    and runs; this run's own once stopped before its notebooks ran)."""
    manifest = _previous_manifest(out_abs)
    if not manifest:
        return
    manifest["status"] = status
    if interrupted is not None:
        manifest["interrupted"] = interrupted
    _write_manifest(manifest, out_abs)


def _reproduce(profile, notebooks_dir, out_dir, cwd, start, only, timeout, overrides,
               force_clear) -> dict[str, Any]:
    cwd = Path(cwd).resolve()
    out = Path(out_dir)
    out_abs = out if out.is_absolute() else cwd / out
    nb_dir = Path(notebooks_dir)
    nb_dir = nb_dir if nb_dir.is_absolute() else cwd / nb_dir
    all_notebooks = find_notebooks(nb_dir)
    notebooks = find_notebooks(nb_dir, start, only)
    profile_name, profile_data = load_profile(profile)
    # validate against every notebook, so a typo is caught even when running part of the chain
    resolved_all = resolve_parameters(profile_data, all_notebooks, profile_name, overrides)
    claim_output_folder(out_abs, force=force_clear)
    partial = bool(start or only)
    previous = _previous_manifest(out_abs) if partial else {}
    prev_records = {r.get("name"): r for r in previous.get("notebooks", []) if isinstance(r, dict)}
    prev_produced: dict[str, str] = previous.get("produced_by") or {}
    # notebooks that will run, and (--from) everything after them: their old files go first
    later = [p for p in all_notebooks if start and p.name[:2] >= start.zfill(2)]
    to_clear = all_notebooks if not partial else list(dict.fromkeys(notebooks + later))
    if not partial:  # a full run starts clean: every owned file (the chain's copies and logs below)
        _remove(out_abs, [*(_previous_manifest(out_abs).get("produced_by") or {}),
                          *(rel for rel in _files(out_abs) if owner_of(rel) is not None)])
    for nb in to_clear:
        clear_outputs(out_abs, nb.stem, prev_produced, runner_files=True)
    run_stems = {nb.stem for nb in notebooks}
    cleared_stems = {nb.stem for nb in to_clear}
    produced_by = {rel: stem for rel, stem in prev_produced.items()
                   if stem not in cleared_stems and (out_abs / rel).is_file()}
    started = time.gmtime()
    sha, dirty = git_state(cwd)
    try:
        nb_folder = str(nb_dir.relative_to(cwd))
    except ValueError:
        nb_folder = str(nb_dir)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", started) + f"-{os.getpid()}"
    manifest: dict[str, Any] = {
        "run_id": run_id, "status": "running", "profile": profile_name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
        "command": {"from": start, "only": only}, "notebooks_dir": nb_folder,
        "git_commit": sha, "git_dirty": dirty, "packages": package_versions(),
        "platform": platform.platform(), "notebooks": [],
        "parameters": {k: v for k, v in (previous.get("parameters") or {}).items()
                       if k not in cleared_stems},
    }
    records: dict[str, dict[str, Any]] = {
        stem: rec for stem, rec in prev_records.items()
        if stem not in cleared_stems and stem in {p.stem for p in all_notebooks}}
    total = len(notebooks)
    failure = None
    interrupted: Interrupted | None = None
    edits: dict[str, dict[str, Any]] = {}
    for i, nb in enumerate(notebooks, 1):
        t0 = time.monotonic()
        params = {**resolved_all[nb.stem]}
        declared = notebook_parameters(nb)
        if "out_dir" in declared:
            params["out_dir"] = str(out)
        # what the notebook actually runs with: its parameters cell as it is on disk (edits
        # included), then what the profile injects over it
        manifest["parameters"][nb.stem] = {**declared, **params}
        manifest.setdefault("injected_parameters", {})[nb.stem] = params
        edited = notebook_edits(nb, cwd)
        if edited:
            edits[nb.stem] = edited
            kept = {k: v["now"] for k, v in edited["parameters"].items() if k not in params}
            log.warning("%s differs from the committed version (cells %s)%s: this run uses the edited "
                        "notebook; 'git checkout %s' restores it", nb.name,
                        ", ".join(map(str, edited["cells"])),
                        (" and runs with " + ", ".join(f"{k} = {v!r}" for k, v in kept.items())) if kept else "",
                        _shown_path(nb, cwd))
        log.info("[%d/%d] %s ...", i, total, nb.name)
        before = _files(out_abs)
        try:
            run = run_notebook(nb, out_abs, params, cwd, timeout)
        except Interrupted as stop:
            interrupted = stop
            run = NotebookRun(nb.stem, time.monotonic() - t0, False, str(out_abs / "notebooks" / nb.name),
                              str(out_abs / "logs" / f"{nb.stem}.log"))
        after = _files(out_abs)
        for rel in [r for r in produced_by if r not in after]:
            del produced_by[rel]
        produced_by.update({rel: nb.stem for rel, st in after.items() if before.get(rel) != st})
        records[nb.stem] = _record(run, run_id, profile_name, out_abs)
        if interrupted is not None:
            records[nb.stem].update(status="interrupted", signal=interrupted.name)
            manifest["interrupted"] = {"notebook": nb.stem, "signal": interrupted.name}
            break
        if not run.ok:
            failure = run
            break
        log.info("[%d/%d] %s ok (%.1f s)", i, total, nb.name, run.seconds)
    for nb in all_notebooks:
        rec = records.get(nb.stem)
        if rec is None:
            why = ("the run was interrupted" if interrupted is not None and nb.stem in run_stems
                   else "an earlier notebook failed" if failure is not None and nb.stem in run_stems
                   else "not selected (--from/--only) and no earlier run recorded")
            rec = {"name": nb.stem, "status": "not run", "ok": False, "reason": why}
        elif rec.get("run_id") != run_id:
            rec = {**rec, "kept_from_earlier_run": True}
        manifest["notebooks"].append(rec)
    statuses = [r["status"] for r in manifest["notebooks"]]
    manifest["status"] = ("interrupted" if interrupted is not None else
                          "failed" if "failed" in statuses else
                          "incomplete" if "not run" in statuses else "ok")
    manifest["seeds"] = {stem: p.get("seed") for stem, p in manifest["parameters"].items() if "seed" in p}
    manifest["edited_notebooks"] = edits   # notebooks that differed from the committed version
    manifest["produced_by"] = dict(sorted(produced_by.items()))
    _write_manifest(manifest, out_abs)
    if interrupted is not None:
        interrupted.manifest_written = True
        interrupted.notebook = manifest["interrupted"]["notebook"]
        raise interrupted
    if failure is not None:
        raise RunnerError(describe_failure(failure))
    return manifest


def _write_manifest(manifest: dict[str, Any], out_abs: Path) -> None:
    """Hash only files a notebook of this run (or, for kept records, of the run named there)
    wrote; anything else under the folder is listed by name in ``other_files``."""
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    produced = manifest.get("produced_by", {})
    manifest["outputs"] = {rel: sha256_file(out_abs / rel) for rel in sorted(produced)
                           if (out_abs / rel).is_file()}
    manifest["other_files"] = sorted(rel for rel in _files(out_abs) if rel not in produced)
    write_json(out_abs / MANIFEST, manifest)


# --- notebook hygiene -------------------------------------------------------------------------

def strip_notebook(path: str | Path) -> bool:
    """Remove outputs and execution counts; return True when the file changed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if cell.outputs or cell.execution_count is not None:
                changed = True
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    for key in ("papermill", "widgets"):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def notebooks_with_outputs(folder: str | Path) -> list[str]:
    import nbformat

    dirty = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if any(c.cell_type == "code" and (c.outputs or c.execution_count is not None) for c in nb.cells):
            dirty.append(str(path))
    return dirty


# --- CLI --------------------------------------------------------------------------------------

def register_cli(sub) -> None:
    p = sub.add_parser("reproduce", help="run the numbered notebooks in order (the whole pipeline)")
    p.add_argument("--profile", default="cpu", help="smoke | cpu | gpu | path to a YAML profile (default: cpu)")
    p.add_argument("--notebooks", default="notebooks", help="folder of numbered notebooks (default: notebooks)")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--cwd", default=".", help="working directory of every kernel (default: .)")
    p.add_argument("--from", dest="start", metavar="NN", help="start at notebook NN")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per notebook (default: 1800)")
    p.add_argument("--force-clear", action="store_true",
                   help="take over --out even when it holds files this project did not write (refused "
                        "otherwise): those at paths the run writes are moved to aes-moved-aside-<time>/ "
                        "in it (the console says where), the others stay; nothing is deleted")
    p.set_defaults(func=_cli_reproduce)
    s = sub.add_parser("strip", help="remove outputs from notebooks before committing")
    s.add_argument("paths", nargs="+", help="notebook files")
    s.set_defaults(func=_cli_strip)


def _cli_reproduce(args) -> int:
    try:
        manifest = reproduce(args.profile, args.notebooks, args.out, args.cwd, args.start, args.only,
                             args.timeout, force_clear=args.force_clear)
    except (ForeignFolderError, FolderBusyError) as e:   # a user error: exit 2, like every stage's
        print(f"aes reproduce: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as stop:   # one line, no traceback; the shell's code for the signal
        where = f"during {stop.notebook}" if getattr(stop, "notebook", None) else "before a notebook ran"
        manifest_path = Path(args.cwd, args.out) / MANIFEST
        said = (f"manifest {manifest_path} says status interrupted" if manifest_path.is_file()
                else "no manifest written")
        print(f"aes reproduce: interrupted by {stop.name} {where}; notebook processes stopped; {said}",
              file=sys.stderr)
        return stop.exit_code
    except RunnerError as e:
        print(f"aes reproduce: {e}", file=sys.stderr)
        return 1
    ran = [n for n in manifest["notebooks"] if n.get("run_id") == manifest["run_id"]]
    total = sum(n["seconds"] for n in ran)
    print(f"ran {len(ran)} notebook(s) in {total:.0f} s (status {manifest['status']}); "
          f"manifest: {Path(args.out) / 'run_manifest.json'}")
    return 0


def _cli_strip(args) -> int:
    for path in args.paths:
        if strip_notebook(path):
            print(f"stripped {path}")
    return 0
