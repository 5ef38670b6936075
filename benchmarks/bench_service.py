"""``facefuse serve`` under load: throughput and latency for concurrent clients, with the
model thread's micro-batching on (a window of 10 ms) and off (window 0).

Usage:
    python benchmarks/bench_service.py                       # starts the servers itself
    python benchmarks/bench_service.py --clients 1 4 8 16 --seconds 20
    python benchmarks/bench_service.py --url http://127.0.0.1:8000   # a running server
    python benchmarks/bench_service.py --soak 10000 --windows 10 --clients 16   # memory

For each window it starts ``facefuse serve --batch-window-ms W`` on a free loopback port
(one worker, the shipped model and identity networks; ``--serve-option`` adds options),
waits for ``/healthz``, warms up with the largest number of clients for 3 s (so that the
largest batches have run), then for each number of clients (1, 4, 8, 16) runs that many
threads for ``--seconds``, each posting one LFW photo per request to ``/v1/analyze`` in a
loop (its own keep-alive connection, photos in turn, read in place from ../shared/data).
Per run: requests and faces per second, p50/p95/p99 latency, errors (any status but 200),
and the model thread's mean images per batch (from ``/metrics``); per server the resident
memory at the start, after the warm-up and at the end. Then the same photos through the
analyzer in this process, one a call and 32 a call (no HTTP), for the ratio.

``--soak N`` replaces the timed runs: per window, N requests from the largest number of
clients after a 5 s warm-up at that load, the server's resident memory read at its start,
after the warm-up, every 0.25 s during the run and at the end; per tenth of the requests
its lowest, median and highest reading, then the table row: requests, seconds,
requests/s, p50/p99, errors, memory at the start, after the warm-up, in the first and the
last tenth (median and range), and at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "lfw"


def photos(n: int) -> list[tuple[str, bytes]]:
    """The first photo of the first ``n`` people (by name) with at least two photos."""
    people = sorted(p for p in LFW.iterdir() if (p / f"{p.name}_0002.jpg").is_file())[:n]
    return [(f"{p.name}_0001.jpg", (p / f"{p.name}_0001.jpg").read_bytes()) for p in people]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_ready(url: str, server: subprocess.Popen | None, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} did not answer /healthz within {timeout:g} s")


def load(url: str, images: list[tuple[str, bytes]], clients: int, seconds: float,
         headers: dict[str, str], total: int | None = None,
         on_request: Callable[[int], None] | None = None) -> dict:
    """``clients`` threads posting one photo a request for ``seconds``, or until ``total``
    requests have been sent; ``on_request(n)`` after the n-th (from any client thread)."""
    import httpx

    latencies: list[float] = []
    errors, faces, sent, done = [0], [0], [0], [0]
    lock, start = threading.Lock(), threading.Barrier(clients + 1)

    def take() -> bool:
        with lock:
            if total is not None and sent[0] >= total:
                return False
            sent[0] += 1
            return True

    def client(k: int) -> None:
        mine, got, bad, found = [], 0, 0, 0
        with httpx.Client(timeout=120, headers=headers) as http:
            start.wait()
            end = time.monotonic() + seconds
            i = k
            while time.monotonic() < end and take():
                name, data = images[i % len(images)]
                i += clients
                t = time.perf_counter()
                r = http.post(f"{url}/v1/analyze", files=[("files", (name, data,
                                                                      "image/jpeg"))])
                mine.append(time.perf_counter() - t)
                if r.status_code == 200:
                    got += 1
                    found += len(r.json()["results"][0]["faces"])
                else:
                    bad += 1
                if on_request is not None:
                    with lock:
                        done[0] += 1
                        n = done[0]
                    on_request(n)
        with lock:
            latencies.extend(mine)
            errors[0] += bad
            faces[0] += found

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 \
        else [latencies[0] if latencies else float("nan")] * 99
    return {"requests": len(latencies), "rps": len(latencies) / wall,
            "faces_per_s": faces[0] / wall, "p50": q[49], "p95": q[94], "p99": q[98],
            "errors": errors[0], "seconds": wall}


def bench_server(url: str, images: list, clients: list[int], seconds: float,
                 headers: dict[str, str], pid: int | None, label: str) -> list[str]:
    import httpx

    rows = []
    start_mb = rss_mb(pid) if pid else None
    # warm-up: first-call allocations, and the largest batches the runs will make
    load(url, images, max(clients), 3.0, headers)
    warm_mb = rss_mb(pid) if pid else None
    for n in clients:
        before = httpx.get(f"{url}/metrics", headers=headers).text
        r = load(url, images, n, seconds, headers)
        after = httpx.get(f"{url}/metrics", headers=headers).text
        batches = metric(after, "facefuse_model_batches_total") - \
            metric(before, "facefuse_model_batches_total")
        batched = metric(after, "facefuse_model_batch_images_sum") - \
            metric(before, "facefuse_model_batch_images_sum")
        per_batch = batched / batches if batches else float("nan")
        rows.append(f"| {label} | {n} | {r['requests']} | {r['rps']:.1f} | "
                    f"{r['faces_per_s']:.1f} | {r['p50'] * 1000:.0f} | {r['p95'] * 1000:.0f} "
                    f"| {r['p99'] * 1000:.0f} | {per_batch:.2f} | {r['errors']} |")
        print(rows[-1], flush=True)
    if pid:
        print(f"{label}: server memory {start_mb:.0f} MB at the start, {warm_mb:.0f} MB after "
              f"the warm-up, {rss_mb(pid):.0f} MB at the end", flush=True)
    return rows


def soak(url: str, images: list, clients: int, total: int, pid: int, label: str,
         blocks: int = 10, every_s: float = 0.25) -> str:
    """``total`` requests from ``clients`` threads. The server's resident memory is read at
    its start, after a warm-up of ``clients`` threads for 5 s (the largest batches the soak
    makes), and every ``every_s`` seconds during the run: it swings by a batch's working
    memory from one reading to the next, so each of ``blocks`` blocks of requests reports
    its lowest, median and highest reading; memory that grows shows in the medians and the
    highs rising from block to block."""
    start_mb = rss_mb(pid)
    load(url, images, clients, 5.0, {})
    warm_mb = rss_mb(pid)
    print(f"{label}: {start_mb:.0f} MB at the start, {warm_mb:.0f} MB after the warm-up",
          flush=True)
    size = max(1, total // blocks)
    done, readings = [0], [[] for _ in range(blocks + 1)]
    stop = threading.Event()

    def count(n: int) -> None:
        done[0] = n

    def sampler() -> None:
        while not stop.wait(every_s):
            readings[min(done[0] // size, blocks)].append(rss_mb(pid))

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    r = load(url, images, clients, float("inf"), {}, total, count)
    stop.set()
    watcher.join()
    end_mb = rss_mb(pid)
    summary = [(k, min(v), statistics.median(v), max(v)) for k, v in enumerate(readings) if v]
    for k, low, mid, high in summary:
        print(f"{label}: requests {k * size} to {min(total, (k + 1) * size)}: RSS {low:.0f} / "
              f"{mid:.0f} / {high:.0f} MB (lowest / median / highest)", flush=True)
    first, last = summary[0], summary[-1]
    row = (f"| {label} | {clients} | {r['requests']} | {r['seconds']:.0f} | {r['rps']:.1f} | "
           f"{r['p50'] * 1000:.0f} | {r['p99'] * 1000:.0f} | {r['errors']} | {start_mb:.0f} | "
           f"{warm_mb:.0f} | {first[2]:.0f} ({first[1]:.0f} to {first[3]:.0f}) | "
           f"{last[2]:.0f} ({last[1]:.0f} to {last[3]:.0f}) | {end_mb:.0f} |")
    print(row, flush=True)
    return row


def in_process(images: list[tuple[str, bytes]]) -> list[str]:
    """The same photos through the analyzer in this process (what `facefuse analyze` does
    without its start-up): one at a time, and 32 a call; decoding included."""
    from facefuse.data.images import decode_rgb
    from facefuse.inference.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer()
    analyzer.analyze(decode_rgb(images[0][1]))  # warm-up
    lines = []
    for label, batch in (("one image a call", 1), ("32 images a call", 32)):
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            analyzer.analyze_many([decode_rgb(d, n) for n, d in images[i:i + batch]],
                                  batch_images=batch)
        wall = time.perf_counter() - start
        lines.append(f"in process, {label}: {len(images) / wall:.1f} images/s")
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--seconds", type=float, default=15.0, help="per run (default 15)")
    ap.add_argument("--windows", type=float, nargs="+", default=[10.0, 0.0],
                    help="batching windows in ms, one server each (default 10 0)")
    ap.add_argument("--photos", type=int, default=64, help="distinct LFW photos (default 64)")
    ap.add_argument("--url", default=None, help="bench this running server instead")
    ap.add_argument("--api-key", default=os.environ.get("FACEFUSE_API_KEY"))
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the same photos through the analyzer in this process")
    ap.add_argument("--serve-option", action="append", default=[], metavar="OPTION",
                    help="an option for the servers started (repeatable; e.g. "
                         "--serve-option=--cpu-arena)")
    ap.add_argument("--soak", type=int, default=None, metavar="N",
                    help="instead of the timed runs: N requests from the largest --clients "
                         "per window, the server's memory sampled ten times")
    args = ap.parse_args()
    if args.soak is not None and args.url:
        ap.error("--soak reads the memory of a server it starts; not with --url")
    images = photos(args.photos)
    headers = {"x-api-key": args.api_key} if args.api_key else {}
    print(f"# {platform.machine()}, {os.cpu_count()} CPU(s), Python "
          f"{platform.python_version()}; {len(images)} LFW photos (90x90, one face each), "
          f"{args.seconds:g} s per run")
    if args.soak is not None:
        print("| window | clients | requests | s | req/s | p50 ms | p99 ms | errors | RSS MB "
              "start | after warm-up | first block, median (range) | last block | end |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    header = ["| window | clients | requests | req/s | faces/s | p50 ms | p95 ms | p99 ms | "
              "images/batch | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    if args.soak is None:
        print("\n".join(header), flush=True)
    if args.url:
        bench_server(args.url.rstrip("/"), images, args.clients, args.seconds, headers, None,
                     "running")
        return 0
    for window in args.windows:
        port = free_port()
        print(f"window {window:g} ms:", flush=True)
        server = subprocess.Popen([sys.executable, "-m", "facefuse", "serve", "--port",
                                   str(port), "--batch-window-ms", f"{window:g}",
                                   *args.serve_option],
                                  env={**os.environ, "FACEFUSE_API_KEY": ""})
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, server)
            if args.soak is not None:
                soak(url, images, max(args.clients), args.soak, server.pid, f"{window:g} ms")
            else:
                bench_server(url, images, args.clients, args.seconds, {}, server.pid,
                             f"{window:g} ms")
        finally:
            server.terminate()
            server.wait(30)
    if not args.no_baseline and args.soak is None:
        in_process(images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
