"""DVReward client throughput vs concurrency against the local OpenAI-compatible server.

    python benchmarks/bench_reward.py [--images 8 --questions 32 --latency-ms 20 --concurrency 1,2,4,8,16,32,64]

The server (alphagrpo_jax.reward.openai_server, a separate process so it does not share the client's GIL)
answers every question with P(yes) = 0.7 after `--latency-ms`. For each concurrency limit the reward service
scores N images x M questions once (after a warm-up batch) and we report requests/s, the ideal
concurrency / latency, the speed-up over concurrency 1, and the results lost or duplicated: the reward must be
exactly 0.7 for every image, the client must have sent N*M requests with no retries, and the server must have
received and answered exactly N*M.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

from alphagrpo_jax.reward.records import Question, QuestionSet
from alphagrpo_jax.reward.service import build_reward_fn, reward_config

P_YES = 0.7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, method: str = "GET") -> dict:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alphagrpo_jax.reward.openai_server", "--port", str(port),
                             "--model", reward_config().model,  # the name the client sends
                             "--p-yes", str(P_YES), "--latency-ms", str(latency_ms)], stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            _http(base + "/stats")
            return proc, base
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the benchmark server did not start")


def batch(n_images: int, n_questions: int, size: int, tag: str):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    n_sem = n_questions // 2
    records = [QuestionSet(f"prompt {i}", tuple(Question("semantic", f"{tag} {i} s{j}?", "Existence")
                                                for j in range(n_sem)),
                           tuple(Question("quality", f"{tag} {i} q{j}?", "Texture")
                                 for j in range(n_questions - n_sem))) for i in range(n_images)]
    return images, [r.prompt for r in records], records


def run_level(base: str, concurrency: int, args) -> dict:
    cfg = reward_config()
    cfg.endpoints = (base + "/v1",)
    cfg.concurrency_per_endpoint = concurrency
    cfg.image_format = args.image_format
    cfg.timeout_s = 30.0
    n = args.images * args.questions
    with build_reward_fn(cfg) as fn:
        fn(*batch(args.images, 2, args.size, "warmup"))  # opens connections, starts the encoder threads
        _http(base + "/reset", "POST")
        before = dict(fn.stats())
        images, prompts, records = batch(args.images, args.questions, args.size, f"c{concurrency}")
        start = time.perf_counter()
        result = fn(images, prompts, records)
        seconds = time.perf_counter() - start
        after = fn.stats()
    server = _http(base + "/stats")
    sent = after["dvreward/attempts"] - before.get("dvreward/attempts", 0)
    retries = after.get("dvreward/retries", 0) - before.get("dvreward/retries", 0)
    correct = int(np.sum(np.abs(result.rewards - P_YES) < 1e-6))
    lost = (n - result.counts["dvreward/scored"]) + (args.images - correct) + abs(server["answered"] - n)
    return {"concurrency": concurrency, "requests": n, "seconds": seconds, "rps": n / seconds,
            "ideal": min(concurrency, n) / (args.latency_ms / 1000.0), "sent": sent, "retries": retries,
            "server_received": server["received"], "server_max_in_flight": server["max_in_flight"], "lost": lost}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--questions", type=int, default=32, help="questions per image (half semantic, half quality)")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--image-format", default="jpeg", choices=("jpeg", "png"))
    args = p.parse_args()
    proc, base = start_server(args.latency_ms)
    try:
        rows = [run_level(base, int(c), args) for c in args.concurrency.split(",")]
    finally:
        proc.terminate()
        proc.wait()
    print(f"{args.images} images x {args.questions} questions, server latency {args.latency_ms:g} ms, "
          f"{args.size}x{args.size} {args.image_format}")
    print(f"{'conc':>5} {'req':>5} {'sec':>7} {'req/s':>8} {'ideal':>8} {'eff':>5} {'x c=1':>6} {'peak':>5} "
          f"{'sent':>5} {'retry':>5} {'lost':>4}")
    base_rps = rows[0]["rps"]
    for r in rows:
        print(f"{r['concurrency']:>5} {r['requests']:>5} {r['seconds']:>7.3f} {r['rps']:>8.1f} {r['ideal']:>8.1f} "
              f"{r['rps'] / r['ideal']:>5.2f} {r['rps'] / base_rps:>6.2f} {r['server_max_in_flight']:>5} "
              f"{r['sent']:>5} {r['retries']:>5} {r['lost']:>4}")
    if any(r["lost"] or r["retries"] or r["sent"] != r["requests"] or r["server_received"] != r["requests"]
           for r in rows):
        sys.exit("lost, duplicated or retried requests: see the table")


if __name__ == "__main__":
    main()
