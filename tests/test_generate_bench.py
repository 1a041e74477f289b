"""A quick run of bench/generation_throughput.py (the full one: 2,000 requests, see docs/generate.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_throughput_bench_quick_run(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "generation_throughput.py"),
                           "--requests", "20", "--concurrency", "8", "--latency-ms", "20",
                           "--json-out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("project client (concurrency 8): 20 requests")
    assert lines[1].startswith("plain serial loop") and lines[2].startswith("ratio: ")
    r = json.loads(out.read_text())
    assert r["ok_project"] == 20 and r["ok_serial"] == 20
    assert r["server_requests"] == 41  # 20 + 20 + one warm-up: nothing lost, nothing resent
    assert abs(r["ratio"] - r["serial_seconds"] / r["project_seconds"]) <= 0.02 * r["ratio"] + 0.01
