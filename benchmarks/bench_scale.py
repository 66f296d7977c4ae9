"""Scaling benchmark: a corpus bigger than a memory budget, two processes against one, the HTTP
server under load, and training killed at random moments. Prints a table for each and writes the
same numbers as JSON. Everything runs through the real command lines (gpt_final_version.py, torchrun,
chat_data.py, serve.py) in child processes.

    python -m benchmarks.bench_scale                       # all four, ~6 minutes on 2 CPU cores
    python -m benchmarks.bench_scale --only=corpus --corpus_mb=4000 --budget_mb=320
    python -m benchmarks.bench_scale --only=processes --nproc=2
    python -m benchmarks.bench_scale --only=server --requests=200 --clients=16
    python -m benchmarks.bench_scale --only=kills --kills=20

Peak memory is each child's own max RSS, read from the kernel when it exits (os.wait4), or from
/proc/PID/status (VmHWM) for the server, which is still running when we read it. Pages of a
memory-mapped corpus count in RSS only while they are resident, which is why the prepared path
stays flat however large the corpus is.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project: the scripts it starts live there
SHAKESPEARE = os.environ.get("GPT_SHAKESPEARE", str(ROOT / "data/tinyshakespeare/input.txt"))
QUIET = ["--notes=", "--samples_dir=", "--progress=false", "--sample_chars=0"]


# ----------------------------------------------------------------------------------------------
# Child processes and what they used


def run_child(command: list[str], env: dict | None = None, cwd: Path = ROOT, cgroup: Path | None = None) -> dict:
    """Run a command to the end; return its output, wall time and memory: peak RSS (MB) from the
    kernel, and the peaks of its private (RssAnon) and file-backed (RssFile) parts, sampled every 20 ms.
    File-backed pages of a memory map are clean page cache the kernel may drop at any time."""
    start = time.perf_counter()
    enter = (lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, **(env or {})}, preexec_fn=enter)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(child.stdout.read()))
    reader.start()
    peaks = {"RssAnon": 0, "RssFile": 0}
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)  # wait4 also gives the kernel's max RSS
        if pid:
            break
        for field, kb in _memory_fields(child.pid).items():
            peaks[field] = max(peaks[field], kb)
        time.sleep(0.02)
    child.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    output = "".join(chunks)
    if child.returncode != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(command)}\n{output[-3000:]}")
    return {"output": output, "seconds": time.perf_counter() - start,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_private_mb": peaks["RssAnon"] / 1024, "peak_file_mb": peaks["RssFile"] / 1024}


def _memory_fields(pid: int) -> dict:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(RssAnon|RssFile):\s+(\d+) kB", status)}


def final_fields(output: str) -> dict:
    """The numbers of the one 'final:' line a training run prints."""
    line = next(row for row in output.splitlines() if row.startswith("final:"))
    return {k: float(v) for k, v in (part.split("=", 1) for part in line.split()[1:]) if k != "checkpoint"}


def train_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "gpt_final_version.py"), *args, *QUIET]


# ----------------------------------------------------------------------------------------------
# (a) A corpus bigger than the memory budget


def write_corpus(path: Path, megabytes: int) -> None:
    """Tiny-shakespeare repeated to the requested size (the same 65 characters, any length)."""
    block = Path(SHAKESPEARE).read_bytes()
    with open(path, "wb") as out:
        out.writelines(block for _ in range(max(1, megabytes * 1_000_000 // len(block))))


def memory_budget(megabytes: int) -> dict | None:
    """A memory cgroup limited to `megabytes` (page cache included), or None where this process may
    not make one (not root, not Linux). v1 and v2 name their files differently."""
    limit = str(megabytes << 20)
    layouts = [(Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.failcnt"),
               (Path("/sys/fs/cgroup"), "memory.max", "memory.peak", "memory.events")]
    for root, limit_file, peak_file, hits_file in layouts:
        if not (root / limit_file.replace("limit_in_bytes", "usage_in_bytes")).exists() and root.name == "memory":
            continue
        group = root / f"gpt-bench-budget-{os.getpid()}"
        try:
            group.mkdir()
            (group / limit_file).write_text(limit)
            return {"path": group, "peak": group / peak_file, "hits": group / hits_file}
        except OSError:
            if group.exists():
                group.rmdir()
    return None


def budget_hits(budget: dict) -> int:
    """How often the limit was reached (and the kernel reclaimed pages instead of failing)."""
    text = budget["hits"].read_text()
    found = re.search(r"^max (\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else int(text.split()[0])


def forget_cached_pages(path: Path) -> None:
    """Drop the file's clean pages from the page cache, so a run under a budget reads them from disk
    and they are charged to it, as they would be for a corpus larger than the machine's memory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_corpus(work: Path, small_mb: int, big_mb: int, iters: int, budget_mb: int) -> list[dict]:
    rows = []
    for megabytes in (small_mb, big_mb):
        source = work / f"corpus-{megabytes}mb.txt"
        write_corpus(source, megabytes)
        size_mb = source.stat().st_size / 1e6
        prepare = run_child([sys.executable, "-c", "import sys; from gptlib import corpus; corpus.prepare_corpus(sys.argv[1])", str(source)])
        train_args = [f"--data={source}", "--preset=tiny", f"--max_iters={iters}", f"--eval_interval={iters}"]
        trained = run_child(train_command(*train_args, "--memmap=true", f"--out={work / 'memmap.pt'}"))
        rows.append({"corpus_mb": size_mb, "path": "prepared + memmap", "prepare_s": prepare["seconds"],
                     "prepare_mb_per_s": size_mb / prepare["seconds"], "prepare_peak_rss_mb": prepare["peak_rss_mb"],
                     **_memory(trained), **final_fields(trained["output"])})
        if megabytes == small_mb:  # the in-memory path, for comparison, on the small corpus only
            in_memory = run_child(train_command(*train_args, "--memmap=false", f"--out={work / 'in-memory.pt'}"))
            rows.append({"corpus_mb": size_mb, "path": "in memory", **_memory(in_memory), **final_fields(in_memory["output"])})
        else:
            rows.append(_run_under_budget(work, source, size_mb, train_args, budget_mb))
        for leftover in work.glob(f"corpus-{megabytes}mb.txt*"):
            leftover.unlink()
    print(f"\n(a) a corpus larger than a memory budget: tiny preset, {iters} steps. RSS = private + file-backed pages;")
    print("    the file-backed pages of a memory map are clean page cache, dropped whenever memory is short")
    print(f"    {'corpus':>9s} {'path':28s} {'prepare':>8s} {'MB/s':>5s} {'prep RSS':>8s} {'peak RSS':>8s} "
          f"{'private':>7s} {'mapped':>7s} {'tokens/s':>8s} {'val loss':>8s}")
    for row in rows:
        if "skipped" in row:
            print(f"    {row['corpus_mb']:7.0f}MB {row['path']:28s} skipped: {row['skipped']}")
            continue
        prepared = "prepare_s" in row
        print(f"    {row['corpus_mb']:7.0f}MB {row['path']:28s} "
              + (f"{row['prepare_s']:7.1f}s {row['prepare_mb_per_s']:5.0f} {row['prepare_peak_rss_mb']:6.0f}MB "
                 if prepared else f"{'-':>8s} {'-':>5s} {'-':>8s} ")
              + f"{row['peak_rss_mb']:6.0f}MB {row['peak_private_mb']:5.0f}MB {row['peak_file_mb']:5.0f}MB "
              f"{row['tokens_per_s']:8.0f} {row['val_loss']:8.4f}")
        if "budget_peak_mb" in row:
            print(f"    {'':9s} {'':28s} the cgroup's own count: peak {row['budget_peak_mb']:.0f} MB of "
                  f"{row['budget_mb']} MB (page cache included), limit reached {row['budget_hits']} times; the run finished")
    return rows


def _memory(result: dict) -> dict:
    return {k: result[k] for k in ("peak_rss_mb", "peak_private_mb", "peak_file_mb")}


def _run_under_budget(work: Path, source: Path, size_mb: float, train_args: list[str], budget_mb: int) -> dict:
    """The same training, in a memory cgroup smaller than the corpus, starting from a cold page cache."""
    label = f"memmap, {budget_mb} MB budget"
    budget = memory_budget(budget_mb)
    if budget is None:
        return {"corpus_mb": size_mb, "path": label, "skipped": "no writable memory cgroup here (needs root on Linux)"}
    try:
        forget_cached_pages(source.with_name(source.name + ".bin"))
        result = run_child(train_command(*train_args, "--memmap=true", f"--out={work / 'budget.pt'}"),
                           cgroup=budget["path"])
        peak = int(budget["peak"].read_text()) / 2**20
        hits = budget_hits(budget)
    finally:
        budget["path"].rmdir()
    return {"corpus_mb": size_mb, "path": label, **_memory(result), **final_fields(result["output"]),
            "budget_mb": budget_mb, "budget_peak_mb": peak, "budget_hits": hits}


# ----------------------------------------------------------------------------------------------
# (b) N processes (torchrun, DDP) against one, on the same global batch


def bench_processes(work: Path, nproc: int, iters: int) -> list[dict]:
    common = [f"--data={SHAKESPEARE}", "--preset=quick", f"--max_iters={iters}"]
    global_batch = 32
    one = run_child(train_command(*common, f"--batch_size={global_batch}", f"--out={work / 'one.pt'}"))
    many = run_child([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                      *train_command(*common, f"--batch_size={global_batch // nproc}", f"--out={work / 'ddp.pt'}")[1:]],
                     env={"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))})
    rows = [{"processes": 1, "batch_per_process": global_batch, "wall_s": one["seconds"], **final_fields(one["output"])},
            {"processes": nproc, "batch_per_process": global_batch // nproc, "wall_s": many["seconds"],
             **final_fields(many["output"])}]
    print(f"\n(b) torchrun: quick preset, {iters} steps, global batch {global_batch} x context 64, "
          f"{os.cpu_count()} CPU cores")
    print(f"    {'processes':>9s} {'batch/proc':>10s} {'tokens/s':>9s} {'train loss':>11s} {'val loss':>9s} {'wall':>7s}")
    for row in rows:
        print(f"    {row['processes']:9d} {row['batch_per_process']:10d} {row['tokens_per_s']:9.0f} "
              f"{row['train_loss']:11.4f} {row['val_loss']:9.4f} {row['wall_s']:6.1f}s")
    print(f"    {nproc} processes: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x the tokens/s of one, "
          f"val loss differs by {abs(rows[1]['val_loss'] - rows[0]['val_loss']):.4f}")
    return rows


# ----------------------------------------------------------------------------------------------
# (c) The server under load


def train_chat_model(work: Path) -> Path:
    pairs, model = work / "pairs.jsonl", work / "chat.pt"
    run_child([sys.executable, str(ROOT / "chat_data.py"), str(ROOT / "data/chat/example_whatsapp.txt"),
               "--me=Ana Silva", f"--out={pairs}"])
    run_child(train_command(f"--data={pairs}", "--preset=quick", "--max_iters=60", f"--out={model}"))
    return model


def start_server(model: Path, *options: str) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), str(model), "--port=0", *options], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first_line = server.stdout.readline()
    port = re.search(r"http://[^:]+:(\d+)", first_line)
    if not port:
        server.kill()
        raise SystemExit(f"serve.py did not start: {first_line!r}")
    return server, int(port.group(1))


# What people type: capitals, punctuation, digits, accents, emoji (which the model mostly never saw:
# the server reads or leaves them out, and says so, instead of refusing the request).
REALISTIC_TEXTS = ["Tudo bem? Chego às 20h30 🙂", "hello, how are you?", "Vens hoje?? Somos 5, levo 2 garrafas 🍷",
                   "OK!! 😂😂 até já", "where r u? call me @ 10:45 — it's urgent", "Parabéns!!! 🎉🎂 #42"]


def request_body(i: int) -> tuple[str, bytes]:
    """A mix: /generate, /v1/chat/completions, and one request in ten malformed on purpose."""
    if i % 10 == 9:
        return "/v1/chat/completions", b'{"messages": [ {"role": "user", "content": "oi"'  # cut short
    text = REALISTIC_TEXTS[i % len(REALISTIC_TEXTS)]
    if i % 2:
        return "/generate", json.dumps({"text": text, "max_new_tokens": 60}).encode()
    chat = {"model": "chat", "max_tokens": 60, "messages": [{"role": "user", "content": f"{text} {i}"}]}
    return "/v1/chat/completions", json.dumps(chat).encode()


def one_request(port: int, i: int) -> dict:
    path, body = request_body(i)
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read())  # every answer, error or not, must be JSON
        well_formed = ("error" in payload) if response.status >= 400 else ("response" in payload or "choices" in payload)
        text = payload.get("response") or (payload.get("choices") or [{}])[0].get("message", {}).get("content", "")
        return {"status": response.status, "seconds": time.perf_counter() - start, "well_formed": well_formed,
                "chars": len(text or "")}
    except Exception as err:  # a hang, a reset or a non-JSON body: exactly what the benchmark looks for
        return {"status": type(err).__name__, "seconds": time.perf_counter() - start, "well_formed": False,
                "detail": f"{path}: {err!r}"[:300]}
    finally:
        connection.close()


def load(port: int, requests: int, clients: int) -> list[dict]:
    results, next_index, lock = [], iter(range(requests)), threading.Lock()

    def client():
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            outcome = one_request(port, i)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def peak_rss_of(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def bench_server(work: Path, requests: int, clients: int) -> list[dict]:
    model = train_chat_model(work)
    settings = {"defaults: one batch of up to 16 replies": [],
                "defaults, compiled batch step": ["--compile=true"],
                "unbatched: a thread per reply, 2 at once": ["--batching=false", "--concurrency=2"],
                "unbatched, compiled step": ["--batching=false", "--concurrency=2", "--compile=true"],
                "tight (1 at once, wait 0.2 s, 4 waiting)": ["--concurrency=1", "--queue_timeout=0.2", "--max_waiting=4"]}
    rows = []
    for label, options in settings.items():
        server, port = start_server(model, *options)
        try:
            start = time.perf_counter()
            results = load(port, requests, clients)
            wall = time.perf_counter() - start
            rss = peak_rss_of(server.pid)
            alive = server.poll() is None
        finally:
            server.kill()
            server.wait()
        statuses = [r["status"] for r in results]
        served = sorted(r["seconds"] for r in results if r["status"] == 200)
        rows.append({"settings": label, "requests": len(results), "clients": clients,
                     "ok": statuses.count(200), "bad_request": statuses.count(400), "busy_503": statuses.count(503),
                     "other": len(results) - statuses.count(200) - statuses.count(400) - statuses.count(503),
                     "malformed_answers": sum(not r["well_formed"] for r in results),
                     "p50_s": served[len(served) // 2] if served else 0.0,
                     "p95_s": served[int(len(served) * 0.95)] if served else 0.0,
                     "wall_s": wall, "server_peak_rss_mb": rss, "server_alive": alive,
                     "answers_per_s": statuses.count(200) / wall,
                     "chars_per_s": sum(r.get("chars", 0) for r in results if r["status"] == 200) / wall,
                     "failures": [r["detail"] for r in results if "detail" in r][:5]})
    print(f"\n(c) serve.py under load: {requests} requests from {clients} clients on loopback, "
          "60 characters each, text as people type it (emoji, digits, punctuation), one in ten malformed on purpose")
    print(f"    {'settings':42s} {'200':>4s} {'400':>4s} {'503':>4s} {'other':>5s} {'bad JSON':>8s} "
          f"{'p50':>6s} {'p95':>6s} {'wall':>6s} {'answers/s':>9s} {'chars/s':>7s} {'peak RSS':>9s} {'alive':>5s}")
    for r in rows:
        print(f"    {r['settings']:42s} {r['ok']:4d} {r['bad_request']:4d} {r['busy_503']:4d} {r['other']:5d} "
              f"{r['malformed_answers']:8d} {r['p50_s']:5.2f}s {r['p95_s']:5.2f}s {r['wall_s']:5.1f}s "
              f"{r['answers_per_s']:9.1f} {r['chars_per_s']:7.0f} "
              f"{r['server_peak_rss_mb']:7.0f}MB {r['server_alive']!s:>5s}")
        for failure in r["failures"]:
            print(f"      failed: {failure}")
    return rows


# ----------------------------------------------------------------------------------------------
# (d) Training killed at random moments


def bench_kills(work: Path, kills: int) -> dict:
    """SIGKILL a run that saves every 5 steps at a random moment (mid-step, mid-evaluation or
    mid-save), `kills` times; after each, the checkpoint must load and a resume must run."""
    import random
    import signal

    from gptlib.checkpoint import load_checkpoint

    corpus, out = work / "kills.txt", work / "kills.pt"
    corpus.write_text(Path(SHAKESPEARE).read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    moments = random.Random(0)
    loadable = resumed = 0
    iterations = []
    for _ in range(kills):
        out.unlink(missing_ok=True)
        run = subprocess.Popen(train_command(f"--data={corpus}", "--preset=tiny", "--max_iters=100000",
                                             "--save_interval=5", "--eval_interval=5", "--eval_iters=20", f"--out={out}"),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
        while not out.exists() and run.poll() is None:
            time.sleep(0.01)
        time.sleep(moments.uniform(0.0, 2.0))
        run.send_signal(signal.SIGKILL)
        run.wait()
        state = load_checkpoint(str(out))  # raises if the kill left a broken file
        loadable += 1
        iterations.append(state["iter_num"])
        again = subprocess.run(train_command(f"--resume={out}", f"--max_iters={state['iter_num'] + 2}",
                                             f"--out={work / 'kills-resumed.pt'}", "--eval_iters=2"),
                               cwd=ROOT, capture_output=True, text=True)
        resumed += again.returncode == 0 and f"resuming at iteration {state['iter_num']}" in again.stdout
    leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
    print(f"\n(d) training killed with SIGKILL at a random moment, {kills} times (saving every 5 steps)")
    print(f"    checkpoint loadable afterwards: {loadable}/{kills}; resumed from it: {resumed}/{kills}; "
          f"killed at iterations {min(iterations)}-{max(iterations)}; temporary files left: {len(leftovers)}")
    return {"kills": kills, "loadable": loadable, "resumed": resumed, "iterations": iterations,
            "temporary_files_left": len(leftovers)}


# ----------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    options = dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "true") for arg in argv)
    if "help" in options or "h" in options:
        print(__doc__)
        return
    known = {"only", "json", "corpus_mb", "small_mb", "corpus_iters", "budget_mb", "nproc", "iters", "requests", "clients", "kills"}
    if not set(options) <= known or not all(a.startswith("--") for a in argv):
        raise SystemExit(f"unknown option in {argv}; known: " + ", ".join(f"--{k}" for k in sorted(known)))
    if not Path(SHAKESPEARE).is_file():
        raise SystemExit(f"{SHAKESPEARE} is missing: run `python gpt_final_version.py` once to download it, "
                         "or point $GPT_SHAKESPEARE at a copy.")
    only = options.get("only", "corpus,processes,server,kills").split(",")
    out = Path(options.get("json", "benchmarks/results/scale.json"))
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu_count": os.cpu_count()}
    work = Path(tempfile.mkdtemp(prefix="gpt-bench-scale-"))
    try:
        if "corpus" in only:
            report["corpus"] = bench_corpus(work, int(options.get("small_mb", 100)), int(options.get("corpus_mb", 2000)),
                                            int(options.get("corpus_iters", 1000)), int(options.get("budget_mb", 320)))
        if "processes" in only:
            report["processes"] = bench_processes(work, int(options.get("nproc", 2)), int(options.get("iters", 350)))
        if "kills" in only:
            report["kills"] = bench_kills(work, int(options.get("kills", 20)))
        if "server" in only:
            report["server"] = bench_server(work, int(options.get("requests", 200)), int(options.get("clients", 16)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
