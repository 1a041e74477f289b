"""What keeps one ``aes reproduce`` run safe for the folder it writes and for the user.

* :class:`RunLock`: one run at a time per output folder. The lock is the operating system's
  (``flock`` on the folder itself), so a run that is killed, even with ``kill -9``, leaves nothing
  stuck: the lock goes with the last process holding it. A second run is refused with a message
  naming the holder (process id, host, start time, command), read from :data:`LOCK_INFO`.
* :func:`move_aside`: ``--force-clear`` on a folder the project did not write moves the files
  the run would delete or overwrite into ``aes-moved-aside-<time>/`` inside that folder (same
  relative paths), and says where; nothing of the user's is deleted.
* :func:`interrupt_signals` and :func:`stop_process_tree`: SIGINT and SIGTERM become
  :class:`Interrupted` in the runner, which stops the notebook's child process and its kernel
  (a kernel runs in a session of its own, so its process group is not enough: the whole tree of
  descendants is stopped); :func:`child_setup` makes a notebook child stop its kernel and exit
  when it is told to or when the runner dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

#: Who holds an output folder's run lock (JSON), beside the lock itself (the folder's flock).
LOCK_INFO = ".aes-run.lock"
#: Where ``--force-clear`` puts a foreign folder's files the run would delete or overwrite.
MOVED_ASIDE_PREFIX = "aes-moved-aside-"
#: Exit codes of ``aes reproduce`` stopped by a signal (the shell's 128 + signal number).
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class FolderBusyError(RuntimeError):
    """Another run holds the output folder; the message names it."""


class Interrupted(BaseException):
    """The runner got SIGINT or SIGTERM (a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT.get(signal.Signals(self.signum), 128 + self.signum)


# --- the run lock -----------------------------------------------------------------------------

class RunLock:
    """Hold ``folder`` (created when missing) for one run; :class:`FolderBusyError` when another
    process holds it. Use as a context manager, or :meth:`acquire` / :meth:`release`."""

    def __init__(self, folder: str | Path, command: str = ""):
        self.folder = Path(folder)
        self.command = command or " ".join(sys.argv)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:   # Windows: no flock; runs are not serialised there
            log.debug("no fcntl: %s is not locked for this run", self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(f"{self.folder}: another run is writing this folder ({self.holder()}); "
                                  "wait for it to finish or stop it, or choose another --out") from None
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": self.command}
        try:
            (self.folder / LOCK_INFO).write_text(json.dumps(info) + "\n", encoding="utf-8")
        except OSError as e:   # a read-only folder fails later with its own message
            log.debug("%s: could not record the lock holder (%s)", self.folder, e)
        return self

    def holder(self) -> str:
        try:
            info = json.loads((self.folder / LOCK_INFO).read_text(encoding="utf-8"))
            return (f"process {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
                    f"{info.get('command')}")
        except (OSError, ValueError, AttributeError):
            return "a process that has not recorded itself yet"

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            (self.folder / LOCK_INFO).unlink()   # still holding the lock: no other run wrote it
        os.close(self._fd)   # the flock goes with the last descriptor
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --- --force-clear on a foreign folder --------------------------------------------------------

def move_aside(out_abs: Path, rels: Iterable[str]) -> Path | None:
    """Move these files (POSIX paths under ``out_abs``) to ``aes-moved-aside-<UTC time>/`` in
    ``out_abs``, keeping their relative paths; return that folder (None when nothing moved)."""
    rels = sorted(r for r in set(rels) if (out_abs / r).is_file() or (out_abs / r).is_symlink())
    if not rels:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = out_abs / f"{MOVED_ASIDE_PREFIX}{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = out_abs / f"{MOVED_ASIDE_PREFIX}{stamp}-{n}"
    for rel in rels:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out_abs / rel), str(dest))
    for folder in sorted({(out_abs / r).parent for r in rels}, key=lambda p: -len(p.parts)):
        while folder != out_abs and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    log.warning("--force-clear: moved %d file(s) of %s the run would delete or overwrite to %s",
                len(rels), out_abs, target)
    return target


# --- signals and child processes --------------------------------------------------------------

@contextlib.contextmanager
def interrupt_signals() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only;
    elsewhere the block changes nothing)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for s in old:   # a second Ctrl-C must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def stop_process_tree(pid: int, grace: float = 5.0, include_root: bool = True) -> list[int]:
    """SIGTERM ``pid`` and all its descendants (kernels run in sessions of their own, so a
    process group does not reach them), then SIGKILL whatever is left after ``grace`` seconds.
    Returns the process ids it signalled."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + ([root] if include_root else [])
    except psutil.NoSuchProcess:
        return []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


def child_setup() -> None:
    """In a notebook's child process: on SIGTERM/SIGINT, or when the runner dies (Linux), stop
    the kernel and everything else below this process, then exit."""

    def handler(signum, frame):
        stop_process_tree(os.getpid(), grace=3.0, include_root=False)
        os._exit(SIGNAL_EXIT.get(signal.Signals(signum), 128 + signum))

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG: SIGTERM when the runner dies
            if os.getppid() == 1:   # the runner died before prctl took effect
                handler(signal.SIGTERM, None)
