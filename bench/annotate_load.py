#!/usr/bin/env python
"""Many annotators at once against `aes collect serve` on 127.0.0.1: stored, lost, p95 seconds.

Starts the class server (a child process, as `make annotate` runs it) over a synthetic manifest of
small PNG images and a fresh store, then lets N annotators work for a fixed time through the
same HTTP calls the page makes: take a name, get the image on show, fetch it, check the grade
level and the attribute level (*Next*, *Next*), submit. Each annotator pauses between those steps
as a fast person would (``--seconds-per-critique`` in all, spread over the steps, with jitter).
Afterwards it reads the SQLite store and prints, per N: submits sent, stored (acknowledged and
found in the store), lost (sent and not stored: must be 0), errors, and the p50 / p95 / max
seconds from the click on *Submit* to the answer, which comes only after the row is committed.
Prints figures only; it asserts no speed. Run: ``PYTHONPATH=. python bench/annotate_load.py``
(default: 10, 20 and 30 annotators, 40 s each). The client runs in this process (one asyncio
loop), so on a 2-core machine it shares the cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOIN = "bench-join-code"
ANSWERS = {"grade": "fair",
           "attributes": {a: {"rating": 3, "word": None} for a in
                          ("technical_quality", "color_light", "composition", "content", "emotion", "interest",
                           "uniqueness", "vibe")},
           "suggestion": ""}


def make_data(root: Path, n: int) -> Path:
    from PIL import Image

    from aes_lib.schema import ImageRecord

    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        Image.new("RGB", (96, 64), ((37 * i) % 256, 120, 200)).save(root / "images" / f"im{i:04d}.png")
        records.append(ImageRecord(id=f"im{i:04d}", file=f"images/im{i:04d}.png", source_photo=f"p{i}",
                                   split="train", title=f"bench image {i}").to_dict())
    (root / "manifest.json").write_text(json.dumps({"name": "bench", "version": 1, "images": records}))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def annotator(i: int, url: str, end: float, per_critique: float, out: dict) -> None:
    import httpx

    rnd = random.Random(i)
    async with httpx.AsyncClient(base_url=url, timeout=60, cookies={"aes_join": JOIN}) as c:
        r = await c.post("/api/name", json={"name": f"student {i:02d}"})
        r.raise_for_status()
        await asyncio.sleep(rnd.uniform(0, per_critique))           # people do not start in step
        n = 0
        while time.monotonic() < end:
            state = (await c.get("/api/state")).json()
            image = state["image"]
            if image is None:
                out["out_of_images"] += 1
                return
            await c.get(image["url"])
            for step in ("grade", "attributes"):
                await asyncio.sleep(per_critique / 3 * rnd.uniform(0.7, 1.3))
                await c.post("/api/check", json={"step": step, "answers": ANSWERS})
            await asyncio.sleep(per_critique / 3 * rnd.uniform(0.7, 1.3))
            n += 1
            text = f"Critique {n} by student {i:02d}: plain light, a centred subject and a calm mood."
            body = {"image_id": image["id"], "answers": {**ANSWERS, "description": text}, "seconds": per_critique}
            out["sent"].append((f"student {i:02d}", image["id"], text))
            t0 = time.perf_counter()
            try:
                r = await c.post("/api/submit", json=body)
                if r.status_code == 200:
                    out["acked"].append((f"student {i:02d}", image["id"]))
                    out["latency"].append(time.perf_counter() - t0)
                else:
                    out["errors"].append(f"{r.status_code} {r.text[:120]}")
            except httpx.HTTPError as e:
                out["errors"].append(f"{type(e).__name__}: {e}")


def run(n: int, seconds: float, per_critique: float, per_image: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # enough images that nobody runs out: every annotator's critiques, k times over
        n_images = max(50, int(n * (seconds / per_critique + 2) * 1.2 / per_image) + 10)
        data = make_data(tmp / "data", n_images)
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log = (tmp / "server.log").open("w")   # a file, not a pipe: a full pipe would stall the server
        server = subprocess.Popen([sys.executable, "-m", "aes_lib.cli", "collect", "serve", "--data", str(data),
                                   "--out", str(tmp / "out"), "--port", str(port), "--per-image", str(per_image),
                                   "--join-code", JOIN], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the server did not start: " + (tmp / "server.log").read_text()[-2000:])
                    time.sleep(0.2)
            out = {"sent": [], "acked": [], "latency": [], "errors": [], "out_of_images": 0}
            end = time.monotonic() + seconds

            async def everyone():
                await asyncio.gather(*(annotator(i, url, end, per_critique, out) for i in range(n)))

            asyncio.run(everyone())
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(30)
            log.close()
        with sqlite3.connect(tmp / "out" / "critiques" / "critiques.db") as con:
            stored = {(a, i): d for a, i, d in con.execute(
                "SELECT annotator, image_id, description FROM critiques")}
            per_image_max = con.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM critiques "
                                        "GROUP BY image_id)").fetchone()[0]
    lost = [s for s in out["sent"] if stored.get((s[0], s[1])) != s[2]]
    lat = sorted(out["latency"])
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else lat * 19
    return {"annotators": n, "seconds": seconds, "images": n_images, "sent": len(out["sent"]),
            "stored": len(out["sent"]) - len(lost), "lost": len(lost), "errors": len(out["errors"]),
            "p50_s": round(statistics.median(lat), 3) if lat else None, "p95_s": round(q[18], 3) if lat else None,
            "max_s": round(lat[-1], 3) if lat else None, "max_per_image": per_image_max,
            "out_of_images": out["out_of_images"], "first_error": out["errors"][0] if out["errors"] else ""}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--annotators", type=int, nargs="+", default=[10, 20, 30], help="annotator counts to run")
    p.add_argument("--seconds", type=float, default=40.0, help="how long each run lasts")
    p.add_argument("--seconds-per-critique", type=float, default=6.0,
                   help="a fast annotator's time per critique (grade, 8 ratings, one sentence)")
    p.add_argument("--per-image", type=int, default=3)
    a = p.parse_args(argv)
    print(f"{os.cpu_count()} CPU cores; {a.seconds:.0f} s per run; {a.seconds_per_critique:g} s per critique "
          f"per annotator; k = {a.per_image}; measured by this run", flush=True)
    print(f"{'annotators':>10} {'sent':>6} {'stored':>7} {'lost':>5} {'errors':>6} {'p50 s':>7} {'p95 s':>7} "
          f"{'max s':>7} {'max/image':>9}", flush=True)
    for n in a.annotators:
        r = run(n, a.seconds, a.seconds_per_critique, a.per_image)
        print(f"{r['annotators']:>10} {r['sent']:>6} {r['stored']:>7} {r['lost']:>5} {r['errors']:>6} "
              f"{r['p50_s']:>7} {r['p95_s']:>7} {r['max_s']:>7} {r['max_per_image']:>9}", flush=True)
        if r["first_error"] or r["out_of_images"]:
            print(f"{'':>10} first error: {r['first_error']!r}; annotators out of images: {r['out_of_images']}")


if __name__ == "__main__":
    main()
