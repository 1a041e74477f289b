"""How many CPU threads torch uses: a policy that degrades gracefully on a busy laptop.

torch's default is one intra-op thread per core. Its thread pool synchronises the threads at
every operation, so when another program holds one of the cores the whole pool waits for the
slowest thread: measured on a 2-core machine beside one CPU-bound process, 40 steps of the tiny
model's training took 111 s with torch's 2 threads and 3.4 s with 1 (see
``bench/cpu_contention.py``). A classroom laptop always runs something else (at least the
browser showing JupyterLab), so the training and evaluation entry points use **half the
available cores** (at least one) unless told otherwise.

``AES_TORCH_THREADS`` sets the policy: ``auto`` (default: half the cores), a number of threads,
or ``torch`` (leave torch's own default). When it is unset and ``OMP_NUM_THREADS`` is set, that
choice is left alone (torch already follows it).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV_VAR = "AES_TORCH_THREADS"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def policy_threads(setting: str | None = None, cores: int | None = None) -> int | None:
    """Threads the policy asks for, or ``None`` to leave torch as it is."""
    if setting is None:
        setting = os.environ.get(ENV_VAR)
        if setting is None and os.environ.get("OMP_NUM_THREADS"):
            return None
    setting = (setting or "auto").strip().lower()
    if setting == "torch":
        return None
    if setting == "auto":
        return max(1, (cores or available_cores()) // 2)
    try:
        threads = int(setting)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{ENV_VAR}={setting!r}: expected auto, torch or a positive number of threads")
    return threads


def apply_thread_policy(setting: str | None = None) -> int:
    """Set torch's intra-op threads by the policy; return the number torch now uses."""
    import torch

    threads = policy_threads(setting)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.debug("torch intra-op threads: %d (%s)", threads, ENV_VAR)
    return torch.get_num_threads()
