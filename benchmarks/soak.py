"""A soak: the server under sustained load for minutes, its memory sampled all along. It should keep
memory bounded (no growth after warm-up) and answer every well-formed request.

    python -m benchmarks.soak --minutes=3 --clients=8 --json=benchmarks/results/soak.json

Trains the small chat model of bench_scale (the example chat, 60 steps of the quick preset) unless
--model names one, starts serve.py with its defaults, and keeps --clients clients asking without
pause: the mix of bench_scale's server load (realistic text, /generate and /v1/chat/completions,
one request in ten malformed on purpose), plus one client in four that streams. The server's RSS is
read from /proc every second; the figure is its growth between the end of the first minute (warm-up:
allocator pools, the batch's cache) and the end.
"""
from __future__ import annotations

import http.client
import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_scale import one_request, start_server, train_chat_model
from gptlib import cli
from gptlib.errors import UserError, run_cli

USAGE = "usage: python -m benchmarks.soak [--minutes=3] [--clients=8] [--model=CKPT] [--json=PATH]"


@dataclass
class SoakConfig:
    minutes: float = 3.0  # how long the load lasts
    clients: int = 8  # clients asking at once, each without pause
    model: str = ""  # a chat checkpoint to serve; empty trains bench_scale's small one
    json: str = ""  # also write the figures here


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def streamed(port: int, i: int) -> dict:
    body = json.dumps({"messages": [{"role": "user", "content": f"are you coming tonight? {i}"}], "max_tokens": 60,
                       "stream": True}).encode()
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        ok = response.status == 200 and data.rstrip().endswith(b"data: [DONE]")
        return {"status": response.status, "seconds": time.perf_counter() - start, "well_formed": ok}
    except Exception as err:
        return {"status": type(err).__name__, "seconds": time.perf_counter() - start, "well_formed": False}
    finally:
        connection.close()


def soak(port: int, pid: int, seconds: float, clients: int) -> tuple[list[dict], list[tuple[float, float]]]:
    results, samples, lock, stop = [], [], threading.Lock(), time.monotonic() + seconds
    counter = iter(range(10**9))

    def client(n: int):
        while time.monotonic() < stop:
            with lock:
                i = next(counter)
            outcome = streamed(port, i) if n % 4 == 3 else one_request(port, i)
            outcome["malformed_on_purpose"] = n % 4 != 3 and i % 10 == 9  # bench_scale's request_body
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while time.monotonic() < stop:
        samples.append((time.monotonic() - started, rss_mb(pid)))
        time.sleep(1.0)
    for thread in threads:
        thread.join()
    return results, samples


def main(argv: list[str]) -> None:
    args = cli.parse_args(argv, [SoakConfig])
    if args.help:
        print(cli.help_text([SoakConfig], USAGE, show_presets=False))
        return
    config = cli.apply(SoakConfig(), args.overrides)
    if config.minutes <= 0 or config.clients < 1:
        raise UserError("--minutes must be positive and --clients at least 1.")
    with tempfile.TemporaryDirectory() as work:
        model = Path(config.model) if config.model else train_chat_model(Path(work))
        server, port = start_server(model, "--device=cpu")
        try:
            results, samples = soak(port, server.pid, config.minutes * 60, config.clients)
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(timeout=60)
    warm = next((rss for t, rss in samples if t >= min(60.0, config.minutes * 30)), samples[0][1])
    statuses: dict = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    figures = {"minutes": config.minutes, "clients": config.clients, "requests": len(results), "statuses": statuses,
               "not_well_formed": sum(not r["well_formed"] for r in results),
               "malformed_on_purpose": sum(r["malformed_on_purpose"] for r in results),
               "well_formed_not_answered": sum(not r["malformed_on_purpose"] and r["status"] != 200 for r in results),
               "malformed_not_refused": sum(r["malformed_on_purpose"] and r["status"] != 400 for r in results),
               "rss_start_mb": samples[0][1], "rss_after_warmup_mb": warm, "rss_end_mb": samples[-1][1],
               "rss_max_mb": max(rss for _, rss in samples), "growth_after_warmup_mb": samples[-1][1] - warm,
               "answers_per_s": statuses.get("200", 0) / (config.minutes * 60), "server_alive": alive}
    print(json.dumps(figures, indent=2))
    if config.json:
        Path(config.json).write_text(json.dumps(figures | {"rss_samples": samples}, indent=1) + "\n")


if __name__ == "__main__":
    run_cli(main)
