"""Throughput of the project's LLM client vs a plain serial loop, against a loopback server.

Starts the fake OpenAI-compatible server (tests/fake_openai_server.py, a separate process on
127.0.0.1) with injected latency, sends the same N distinct chat requests twice, in one run:

1. the project's way: ``LLMClient.run(requests)`` at ``--concurrency`` (default 64);
2. a plain serial loop with the same client settings: one ``openai.OpenAI`` SDK client (same
   base URL, model, request body), ``for r in requests: sdk.chat.completions.create(...)``,
   reusing its connection (the best case for a serial loop).

No cache, so every request reaches the server. One warm-up request (imports, first
connection) goes out before either timing. Prints both rates and their ratio (goal: 30x or
more at concurrency 64 with 100 ms latency). Numbers are "measured by this run" on this machine.

    python bench/generation_throughput.py                 # 2,000 requests, 100 ms (about 4 min)
    python bench/generation_throughput.py --requests 100  # a quick version
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from aes_lib.client import ChatRequest, ClientConfig, LLMClient  # noqa: E402
from fake_openai_server import start_server  # noqa: E402


def make_requests(n: int, tag: str) -> list[ChatRequest]:
    system = (ROOT / "aes_lib" / "prompts" / "refine_v1.txt").read_text()
    return [ChatRequest(f"{tag}{i}", [{"role": "system", "content": system},
                                      {"role": "user", "content": json.dumps(
                                          {"task": "refine", "grade": "good", "n": i,
                                           "description": f"critique number {i} of the bench"})}],
                        json.loads, "bench_v1") for i in range(n)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--json-out", help="also write the numbers to this JSON file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("AES_BENCH_KEY", "not-a-real-key")
    with start_server(latency_ms=a.latency_ms) as server:
        client = LLMClient(ClientConfig(base_url=server.base_url, model="bench",
                                        api_key_env="AES_BENCH_KEY", concurrency=a.concurrency,
                                        max_retries=0, max_reasks=0, cache_path=None))
        client.run(make_requests(1, "warm-up"), progress=False)
        reqs = make_requests(a.requests, "c")
        t0 = time.perf_counter()
        results = client.run(reqs, progress=False)
        t_conc = time.perf_counter() - t0
        ok_conc = sum(r.ok for r in results)
        from openai import OpenAI

        sdk = OpenAI(base_url=server.base_url, api_key=os.environ["AES_BENCH_KEY"], max_retries=0)
        reqs = make_requests(a.requests, "s")
        t0 = time.perf_counter()
        ok_serial = 0
        for r in reqs:
            resp = sdk.chat.completions.create(**client.request_body(r))
            ok_serial += isinstance(r.validate(resp.choices[0].message.content), dict)
        t_serial = time.perf_counter() - t0
        sdk.close()
        sent = server.requests()
    out = {"requests": a.requests, "latency_ms": a.latency_ms, "concurrency": a.concurrency,
           "project_seconds": round(t_conc, 3), "project_rate_per_s": round(a.requests / t_conc, 2),
           "serial_seconds": round(t_serial, 3), "serial_rate_per_s": round(a.requests / t_serial, 2),
           "ratio": round(t_serial / t_conc, 2), "ok_project": ok_conc, "ok_serial": ok_serial,
           "server_requests": sent, "cpu_count": os.cpu_count()}
    print(f"project client (concurrency {a.concurrency}): {a.requests} requests in {t_conc:.2f} s = "
          f"{out['project_rate_per_s']:.1f} req/s ({ok_conc} ok)")
    print(f"plain serial loop (openai SDK):    {a.requests} requests in {t_serial:.2f} s = "
          f"{out['serial_rate_per_s']:.1f} req/s ({ok_serial} ok)")
    print(f"ratio: {out['ratio']:.1f}x (latency {a.latency_ms:.0f} ms, {sent} requests at the server, "
          f"{os.cpu_count()} CPUs; measured by this run)")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
