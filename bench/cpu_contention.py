"""A laptop that is doing something else: the same short training idle and beside a busy core.

    PYTHONPATH=. python bench/cpu_contention.py                 # builds smoke inputs first (~20 s)
    PYTHONPATH=. python bench/cpu_contention.py --inputs outputs  # reuse data/ and instructions/

Trains the tiny LLaVA exactly as notebook 03 does with the cpu profile (``train_tiny_cpu.yaml``:
LoRA, batch 8, the 400-step schedule) but stops after ``--steps`` steps, in a fresh process each
time, and times the training loop (model building and imports are not counted):

1. with the project's thread policy (``aes_lib/threads.py``), on the machine as it is;
2. the same, beside a CPU-bound competitor this script starts itself (``--competitors``
   processes spinning a core each), like a browser or a video call on a classroom laptop;
3. with torch's own default threads (one per core; what the project did before the policy), idle.

``OMP_NUM_THREADS`` and ``AES_TORCH_THREADS`` are removed from the children's environment, so the
policy (or torch's default) decides. Goal: contended / idle <= 2. ``--torch-default-contended``
also times torch's default beside the competitor (slow: minutes on 2 cores). ``--repeat N``
alternates idle and contended runs N times and compares medians, which helps on a machine whose
other load comes and goes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_inputs(folder: Path) -> Path:
    """data/ and instructions/ from notebooks 00-02 with the smoke profile."""
    from aes_lib.runner import reproduce

    reproduce("smoke", notebooks_dir=REPO / "notebooks", out_dir=folder, cwd=folder, only=["00", "01", "02"])
    return folder


def child_train(inputs: Path, run_dir: Path, steps: int) -> None:
    """Run in a fresh process: train ``steps`` steps and print a JSON line of what happened."""
    import logging

    import torch

    from aes_lib.train import TrainConfig, train

    logging.basicConfig(level=logging.WARNING)
    cfg = TrainConfig.from_yaml(
        REPO / "aes_lib" / "assets" / "train_tiny_cpu.yaml",
        train_file=str(inputs / "instructions" / "llava_train.json"), val_file="",
        image_root=str(inputs / "data"), output_dir=str(run_dir / "run"),
        base_model_dir=str(run_dir / "base_model"), n_samples=0, save_every=0, progress=False)
    summary = train(cfg, stop_after=steps)
    print(json.dumps({"seconds": summary["seconds"], "steps": summary["steps_done"],
                      "threads": torch.get_num_threads(), "last_loss": summary["last_loss"]}))


def timed_run(inputs: Path, scratch: Path, steps: int, policy: str, label: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "AES_TORCH_THREADS")}
    if policy == "torch":
        env["AES_TORCH_THREADS"] = "torch"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run_dir = Path(tempfile.mkdtemp(prefix=label.replace(" ", "_"), dir=scratch))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(inputs), str(run_dir), str(steps)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label}: training failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    print(f"  {label:<44} {result['seconds']:8.1f} s loop  {wall:7.1f} s wall  "
          f"({result['threads']} torch thread(s), loss after {result['steps']} steps {result['last_loss']:.3f})",
          flush=True)
    return result


class Competitors:
    """CPU-bound processes spinning a core each until stopped."""

    def __init__(self, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]

    def __enter__(self):
        time.sleep(1.0)   # let them reach full speed
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child_train(Path(argv[1]), Path(argv[2]), int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", help="an outputs folder holding data/ and instructions/ (default: build smoke ones)")
    ap.add_argument("--steps", type=int, default=40, help="training steps per run (default: 40)")
    ap.add_argument("--competitors", type=int, default=1, help="CPU-bound competitor processes (default: 1)")
    ap.add_argument("--repeat", type=int, default=1, help="idle/contended pairs, compared by median (default: 1)")
    ap.add_argument("--torch-default-contended", action="store_true",
                    help="also time torch's default threads beside the competitor (slow)")
    args = ap.parse_args(argv)

    from aes_lib.threads import available_cores, policy_threads

    cores = available_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cores} cores available, 1-minute load average {load:.2f} before the runs; "
          f"policy: {policy_threads('auto', cores)} torch thread(s), torch default: {cores}")
    with tempfile.TemporaryDirectory(prefix="cpu_contention_") as tmp:
        scratch = Path(tmp)
        if args.inputs:
            inputs = Path(args.inputs).resolve()
        else:
            print("building smoke inputs (notebooks 00-02) ...", flush=True)
            inputs = build_inputs(scratch / "outputs")
        print(f"{args.steps} training steps of the tiny LLaVA, batch 8 (train_tiny_cpu.yaml):")
        idle_runs, busy_runs = [], []
        for _ in range(max(1, args.repeat)):
            idle_runs.append(timed_run(inputs, scratch, args.steps, "auto", "policy, idle"))
            with Competitors(args.competitors):
                busy_runs.append(timed_run(inputs, scratch, args.steps, "auto",
                                           f"policy, beside {args.competitors} busy process(es)"))
        idle = {"seconds": statistics.median(r["seconds"] for r in idle_runs)}
        busy = {"seconds": statistics.median(r["seconds"] for r in busy_runs)}
        old_idle = timed_run(inputs, scratch, args.steps, "torch", "torch default threads, idle")
        if args.torch_default_contended:
            with Competitors(args.competitors):
                old_busy = timed_run(inputs, scratch, args.steps, "torch",
                                     f"torch default, beside {args.competitors} busy process(es)")
    ratio = busy["seconds"] / max(idle["seconds"], 1e-9)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-minute load average after the runs: {load_after:.2f} (the competitor included when it ran last)")
    print(f"policy, median of {len(idle_runs)}: idle {idle['seconds']:.1f} s, beside the competitor "
          f"{busy['seconds']:.1f} s")
    print(f"contended / idle with the policy: {ratio:.2f} (goal <= 2)")
    print(f"idle, policy / torch default: {idle['seconds'] / max(old_idle['seconds'], 1e-9):.2f}")
    if args.torch_default_contended:
        print(f"contended / idle with torch's default: {old_busy['seconds'] / max(old_idle['seconds'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
