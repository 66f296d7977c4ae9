"""Speed benchmark: matmul peak, training tokens/s and MFU, sampling with and without the KV cache,
peak memory. Prints a table and writes the same numbers as JSON.

    python -m benchmarks.bench                  # everything, ~6 minutes on 2 CPU cores
    python -m benchmarks.bench --quick          # fewer iterations, smaller lecture batch, ~2 minutes
    python -m benchmarks.bench --json=benchmarks/results/cuda.json --device=cuda
    python -m benchmarks.bench --only=decode    # (e) only: decoding speed, eager against the engine's decoders
    python -m benchmarks.bench --only=finetune  # (f) only: fine-tuning GPT-2 124M, full and LoRA, ~4 minutes on 2 cores
    python -m benchmarks.bench --only=nanogpt --nanogpt=DIR   # (g) only: a step against nanoGPT's (a clone in DIR)
    python -m benchmarks.bench --help           # these lines, nothing run

Each measurement runs in its own Python process, so peak memory (max RSS) is per configuration and
one configuration's allocator state cannot speed up or slow down the next.
MFU = model FLOPs per token x tokens/s / the best matmul throughput measured on the model's own
shapes, in the dtype the training rows compute in (bfloat16 or float16 autocast on cuda, float32 on
the CPU: the practical peak of this machine for that work), counting 6 FLOPs per matmul weight per token plus
12 x n_layer x block_size x n_embd for attention, as nanoGPT and the PaLM paper do.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from config import GPTConfig, TrainConfig, preset_values
from gptlib import devices, optimizers, train
from gptlib.cli import apply
from gptlib.corpus import TextDataset, read_text
from gptlib.devices import choose_device
from gptlib.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]  # the project: workers and the training script run from there
RESULTS = Path("benchmarks/results")

SHAPES = {
    "cpu preset": preset_values("cpu"),
    "cpu, lecture recipe": {**preset_values("cpu"), "position": "learned", "activation": "relu"},
    "lecture 6x384": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.0),
    "lecture, dropout 0.2": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2),
}
# (shape, attention path, torch.compile): the training rows of the table
TRAINING_ROWS = [
    ("cpu preset", "fast", False), ("cpu preset", "heads", False), ("cpu preset", "fast", True),
    ("cpu, lecture recipe", "fast", False),
    ("lecture 6x384", "fast", False), ("lecture 6x384", "heads", False), ("lecture 6x384", "fast", True),
    ("lecture, dropout 0.2", "fast", False), ("lecture, dropout 0.2", "heads", False),
]


def model_flops_per_token(config: GPTConfig, model) -> float:
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embedding" not in n)
    return 6 * matmul_params + 12 * config.n_layer * config.block_size * config.n_embd


def matmul_peak(device: str, dtype: str = "float32", seconds: float = 1.0) -> dict:
    """GFLOP/s of the matmuls the models actually do, (B*T, C) x (C, 3C / 4C / C) and back, in `dtype`."""
    results = {}
    for name, shape in SHAPES.items():
        if "recipe" in name or "dropout" in name:
            continue
        m, c = shape["batch_size"] * shape["block_size"], shape["n_embd"]
        for k, n in ((c, 3 * c), (c, 4 * c), (4 * c, c), (c, c)):
            a, b = (torch.randn(rows, cols, device=device, dtype=getattr(torch, dtype)) for rows, cols in ((m, k), (k, n)))
            a @ b
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 4:
                a @ b
                count += 1
            _sync(device)
            results[f"{name} ({m}x{k})@({k}x{n})"] = 2 * m * k * n * count / (time.perf_counter() - start) / 1e9
    return results


def measure_training(shape_name: str, attention: str, iters: int, warmup: int, device: str, batch_size: int | None,
                     compile: bool = False) -> dict:
    values = dict(SHAPES[shape_name])
    if batch_size:
        values["batch_size"] = batch_size
    from gpt_final_version import GPT

    if device == "cpu":
        train.keep_freed_memory_in_process()  # as training does
    torch.manual_seed(0)
    model_cfg = apply(GPTConfig(vocab_size=65, attention=attention), values)
    cfg = apply(TrainConfig(), values)
    model = GPT(model_cfg).to(device)
    optimizer = optimizers.configure_optimizer(model, cfg, device)
    step_model = torch.compile(model) if compile else model
    scaler = torch.amp.GradScaler(enabled=False)
    facts = devices.probe(device)
    precision = devices.choose_dtype(cfg.dtype, facts, devices.StepShape(model_cfg.n_embd, cfg.batch_size * model_cfg.block_size))  # as training chooses it
    devices.set_tf32(devices.use_tf32(precision.dtype, facts))
    autocast, dtype = devices.autocast_context(precision), precision.dtype
    dataset = TextDataset.from_text(read_text(os.environ.get("BENCH_DATA", "data/tinyshakespeare/input.txt")))
    batches = torch.Generator().manual_seed(0)
    times = []
    for _ in range(warmup + iters):
        start = time.perf_counter()
        train.train_step(step_model, optimizer, scaler, dataset, cfg, model_cfg, device, autocast, batches)
        _sync(device)
        times.append(time.perf_counter() - start)
    tokens = cfg.batch_size * model_cfg.block_size
    measured = times[warmup:]
    return {"tokens_per_s": tokens * len(measured) / sum(measured), "first_iter_s": times[0],
            "later_iter_s": sum(measured) / len(measured), "params": model.num_params(),
            "flops_per_token": model_flops_per_token(model_cfg, model), "batch_size": cfg.batch_size,
            "dtype": dtype, "peak_rss_mb": _peak_rss_mb()}


def measure_sampling(shape_name: str, new_tokens: int, use_cache: bool, device: str) -> dict:
    from gpt_final_version import GPT

    torch.manual_seed(0)
    model = GPT(apply(GPTConfig(vocab_size=65), SHAPES[shape_name])).to(device).eval()
    start_ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    model.generate(start_ids, 20, use_cache=use_cache)  # warm-up
    start = time.perf_counter()
    model.generate(start_ids, new_tokens, generator=torch.Generator().manual_seed(0), use_cache=use_cache)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"tokens_per_s": new_tokens / seconds, "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}


DECODE_SHAPES = {  # (e): the shipped model, and the lecture's size with rotary positions (its cache rolls on)
    "shakespeare_char.pt (1.8M)": "models/shakespeare_char.pt",
    "lecture 6x384 rotary (10.7M)": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.0,
                                         position="rope", activation="relu2"),
}
DECODE_PATHS = ("generate", "static", "compiled")  # GPT.generate (eager), the engine's two fast decoders


def measure_decoding(shape_name: str, path: str, new_tokens: int, device: str, threads: int,
                     dtype: str = "float32") -> dict:
    """Characters/s of one reply of new_tokens characters after a 6-character prompt, and whether the
    tokens are GPT.generate's for the same seed. Compiling is timed apart (it happens once per model)."""
    from gpt_final_version import GPT
    from gptlib import engine
    from model_handler import ModelHandler

    torch.set_num_threads(threads)
    shape = DECODE_SHAPES[shape_name]
    if isinstance(shape, str):
        model = ModelHandler(shape, device).load().model
    else:
        torch.manual_seed(0)
        model = GPT(apply(GPTConfig(vocab_size=65), shape)).to(device).eval()
    model.to(getattr(torch, dtype))  # the weights generating holds (ModelHandler.use_dtype)
    prompt = [5, 6, 7, 8, 9, 10]

    def run():
        generator = torch.Generator().manual_seed(1)
        if path == "generate":
            out = model.generate(torch.tensor([prompt], device=device), new_tokens, generator=generator)
            return out[0, len(prompt):].tolist()
        decoder = engine.decoder_for(model, compiled=path == "compiled")
        return list(engine.TokenStream(decoder, prompt, new_tokens, generator=generator))

    compile_s = 0.0
    if path == "compiled":
        start = time.perf_counter()
        engine.compiled_step(model)
        compile_s = time.perf_counter() - start
    run()  # warm-up
    best = float("inf")
    for _ in range(3):  # the best of three: the machine is shared
        start = time.perf_counter()
        tokens = run()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    reference = model.generate(torch.tensor([prompt], device=device), new_tokens,
                               generator=torch.Generator().manual_seed(1))[0, len(prompt):].tolist()
    return {"tokens_per_s": new_tokens / best, "seconds": best, "compile_s": compile_s,
            "same_tokens": tokens == reference, "params": model.num_params(), "peak_rss_mb": _peak_rss_mb()}


# (f) fine-tuning GPT-2 124M: its shape as pretrained.read_config builds it (random weights: the
# cost does not depend on their values), batch 4 x 256 tokens of its 1024 positions, 3 chat markers
# appended to its vocabulary, as a chat run uses it
GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024, dropout=0.0, bias=True,
                 attention="fast", position="learned", activation="gelu_tanh", qkv_bias=True, lm_head_bias=False,
                 tie_embeddings=True)
FINETUNE_BATCH, FINETUNE_TOKENS = 4, 256
FINETUNE_TARGETS = {"full": 150, "lora": 220}  # tokens/s on 2 CPU cores (issue 13 item 5)
FINETUNE_RSS_MB = 4096


class RandomTokens:
    """Batches of random ids, drawn as a dataset's get_batch draws (train.train_step takes it)."""

    def __init__(self, vocab_size: int, rows: int, tokens: int):
        self.vocab_size, self.rows, self.tokens = vocab_size, rows, tokens

    def get_batch(self, split, batch_size, block_size, generator=None, device="cpu", rank=0, world_size=1):
        ids = torch.randint(self.vocab_size, (self.rows, self.tokens + 1), generator=generator)
        return ids[:, :-1].to(device), ids[:, 1:].to(device)


def measure_finetune(method: str, iters: int, warmup: int, device: str, threads: int, dtype: str = "float32") -> dict:
    """Steady-state tokens/s of fine-tuning steps (forward, backward, clip, AdamW) and peak RSS:
    "full" updates all 124M weights, "lora" rank-8 adapters on qkv and proj (lora.py) alone; in
    float32 or under `dtype` autocast (the weights stay float32)."""
    from gpt_final_version import GPT
    from gptlib import lora

    torch.set_num_threads(threads)
    if device == "cpu":
        train.keep_freed_memory_in_process()
    torch.manual_seed(0)
    # a chat run's shape: GPT-2's vocabulary plus the three chat markers (tokenizer.with_chat_markers)
    model_cfg = GPTConfig(**{**GPT2_124M, "vocab_size": GPT2_124M["vocab_size"] + 3})
    cfg = TrainConfig(batch_size=FINETUNE_BATCH, dtype=dtype, lora_rank=8 if method == "lora" else 0)
    autocast = devices.autocast_context(devices.choose_dtype(dtype, devices.probe(device)))
    model = GPT(model_cfg).to(device)
    if method == "lora":  # as a chat run: the adapters and the markers' rows (lora.TrainedRows) learn
        lora.add_adapters(model, cfg.lora_rank, cfg.lora_alpha, rows_from=GPT2_124M["vocab_size"],
                          targets=lora.target_layers("attn"))  # as its published figures were measured
        lora.freeze_all_but_adapters(model)
    optimizer = optimizers.configure_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(enabled=False)
    data = RandomTokens(model_cfg.vocab_size, FINETUNE_BATCH, FINETUNE_TOKENS)
    batches = torch.Generator().manual_seed(0)
    times = []
    for _ in range(warmup + iters):
        start = time.perf_counter()
        train.train_step(model, optimizer, scaler, data, cfg, model_cfg, device, autocast, batches)
        _sync(device)
        times.append(time.perf_counter() - start)
    measured = times[warmup:]
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"method": method, "tokens_per_s": FINETUNE_BATCH * FINETUNE_TOKENS * len(measured) / sum(measured),
            "step_s": sum(measured) / len(measured), "first_step_s": times[0], "trained_params": trained,
            "params": sum(p.numel() for p in model.parameters()), "peak_rss_mb": _peak_rss_mb(), "threads": threads,
            "dtype": dtype}


def finetune_table(device: str, quick: bool) -> list[dict]:
    """(f) Fine-tuning GPT-2 124M, full and LoRA, each in its own process, against the issue's targets."""
    iters, warmup, threads = (3, 1, 2) if quick else (5, 2, 2)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    shape = devices.StepShape(GPT2_124M["n_embd"], FINETUNE_BATCH * FINETUNE_TOKENS)
    dtypes = dict.fromkeys(("float32", devices.choose_dtype("auto", devices.probe(device), shape).dtype))
    print(f"\n(f) fine-tuning GPT-2 124M shape, batch {FINETUNE_BATCH} x {FINETUNE_TOKENS} tokens, {' and '.join(dtypes)}, "
          f"{threads} threads, {iters} steps after {warmup} warm-up (load average {load:.2f} at the start)")
    print(f"    {'method':8s} {'dtype':>8s} {'trained':>12s} {'tokens/s':>9s} {'target':>7s} {'step':>7s} {'peak RSS':>9s} {'target':>7s}")
    rows = []
    for method in ("full", "lora"):
        for dtype in dtypes:
            row = in_subprocess({"kind": "finetune", "method": method, "iters": iters, "warmup": warmup,
                                 "device": device, "threads": threads, "dtype": dtype})
            row["load_average"] = load
            row["meets_targets"] = (row["tokens_per_s"] >= FINETUNE_TARGETS[method]
                                    and row["peak_rss_mb"] <= FINETUNE_RSS_MB)
            rows.append(row)
            print(f"    {method:8s} {dtype:>8s} {row['trained_params']:12,d} {row['tokens_per_s']:9.0f} "
                  f"{'>=' + str(FINETUNE_TARGETS[method]):>7s} {row['step_s']:6.2f}s {row['peak_rss_mb']:7.0f}MB {'<=4096':>7s}  "
                  f"{'ok' if row['meets_targets'] else 'BELOW TARGET'}")
    return rows


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def in_subprocess(job: dict) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--worker=" + json.dumps(job)], cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark worker failed for {job}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_worker(job: dict) -> dict:
    kind = job.pop("kind")
    if kind == "peak":
        return matmul_peak(**job)
    if kind == "train":
        return measure_training(**job)
    if kind == "decode":
        return measure_decoding(**job)
    if kind == "finetune":
        return measure_finetune(**job)
    return measure_sampling(**job)


def main(argv: list[str]) -> None:
    options = dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "true") for arg in argv)
    if "help" in options or "h" in options:
        print(__doc__)
        return
    if "worker" in options:
        print(json.dumps(run_worker(json.loads(options["worker"]))))
        return
    quick = options.get("quick") == "true"
    device = choose_device(options.get("device", "auto"))
    out = Path(options.get("json", str(RESULTS / "bench.json")))
    report = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    sections = {"decode": ("decoding", decode_table), "finetune": ("finetune", finetune_table)}
    only = options.get("only")
    if only in sections:  # one section alone, in its own JSON
        key, table = sections[only]
        report[key] = table(device, quick)
        out = Path(options.get("json", str(RESULTS / f"{only}.json")))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"\nJSON: {out}")
        return

    if options.get("only") == "nanogpt":  # (g) our training step against nanoGPT's, one run each
        report["vs_nanogpt"] = step_vs_nanogpt(options.get("nanogpt", ""), options.get("data", ""))
        out = Path(options.get("json", str(RESULTS / "vs_nanogpt.json")))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"\nJSON: {out}")
        return

    facts = devices.probe(device)
    peak_dtype = devices.matmul_peak_dtype(devices.choose_dtype("auto", facts))
    compiles, why_not = devices.can_compile(facts)
    # a CPU with bfloat16 hardware trains the small shapes in float32 and the large in bfloat16: both peaks
    peaks = {}
    for dtype in dict.fromkeys((peak_dtype, "float32")):
        gflops = in_subprocess({"kind": "peak", "device": device, "dtype": dtype})
        peaks[dtype] = max(gflops.values())
        report.setdefault("matmul_gflops", {})[dtype] = gflops
        print(f"\n(a) {dtype} matmul on the models' shapes: practical peak {peaks[dtype]:.1f} GFLOP/s")
        for name, value in gflops.items():
            print(f"    {name:44s} {value:8.1f} GFLOP/s")
    report["matmul_peak_gflops"] = peaks

    iters, warmup = (3, 1) if quick else (5, 2)
    lecture_batch = 16 if quick else None
    report["training"] = []
    print(f"\n(b) training, {iters} measured steps after {warmup} warm-up steps")
    print(f"    {'shape':20s} {'path':13s} {'batch':>5s} {'dtype':>8s} {'tokens/s':>9s} {'MFU':>6s} {'1st step':>9s} {'later':>8s} {'peak RSS':>9s}")
    if not compiles:
        print(f"    (no torch.compile rows: {why_not})")
    for shape, attention, compiled in TRAINING_ROWS:
        if compiled and not compiles:
            continue
        row = in_subprocess({"kind": "train", "shape_name": shape, "attention": attention, "iters": iters,
                             "warmup": warmup, "device": device, "compile": compiled,
                             "batch_size": lecture_batch if shape.startswith("lecture") else None})
        path = attention + ("+compile" if compiled else "")
        row.update(shape=shape, attention=path, mfu=row["flops_per_token"] * row["tokens_per_s"] / (peaks[row["dtype"]] * 1e9))
        report["training"].append(row)
        print(f"    {shape:20s} {path:13s} {row['batch_size']:5d} {row['dtype']:>8s} {row['tokens_per_s']:9.0f} {100 * row['mfu']:5.1f}% "
              f"{row['first_iter_s']:8.2f}s {row['later_iter_s']:7.2f}s {row['peak_rss_mb']:7.0f}MB")
    for shape in ("cpu preset", "lecture 6x384"):
        rows = {r["attention"]: r for r in report["training"] if r["shape"] == shape}
        compiled = (f", torch.compile {rows['fast+compile']['tokens_per_s'] / rows['fast']['tokens_per_s']:.2f}x the fast path"
                    if "fast+compile" in rows else "")
        print(f"    {shape}: fast path {rows['fast']['tokens_per_s'] / rows['heads']['tokens_per_s']:.2f}x the per-Head path{compiled}")

    report["sampling"] = {}
    print("\n(c) sampling 1000 new characters, batch 1 (recompute = what gives the same tokens without a cache)")
    for shape, label in (("cpu preset", "rotary, rolling cache"), ("cpu, lecture recipe", "learned positions")):
        rows = {}
        for use_cache in (True, False):
            row = in_subprocess({"kind": "sample", "shape_name": shape, "new_tokens": 1000, "use_cache": use_cache, "device": device})
            rows["kv_cache" if use_cache else "recompute"] = row
            print(f"    {label:22s} {'KV cache' if use_cache else 'recompute':10s} {row['tokens_per_s']:8.0f} tokens/s "
                  f"{row['seconds']:6.2f}s  peak RSS {row['peak_rss_mb']:.0f}MB")
        report["sampling"][shape] = rows
        print(f"    {label}: KV cache {rows['kv_cache']['tokens_per_s'] / rows['recompute']['tokens_per_s']:.1f}x faster")
    rope_cached = report["sampling"]["cpu preset"]["kv_cache"]["tokens_per_s"]
    crop = report["sampling"]["cpu, lecture recipe"]["recompute"]["tokens_per_s"]
    print(f"    rolling cache vs nanoGPT-style crop-and-recompute: {rope_cached / crop:.1f}x faster")

    print("\n(d) peak memory is the peak RSS column of each row above.")
    report["decoding"] = decode_table(device, quick)
    report["finetune"] = finetune_table(device, quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {out}")


def decode_table(device: str, quick: bool) -> list[dict]:
    """(e) One reply, batch 1: GPT.generate against the engine's static-cache and compiled decoders,
    with float32 weights and (where the machine multiplies it in hardware) bfloat16 ones; "vs
    generate" is against float32 GPT.generate, "same tokens" against GPT.generate in the row's dtype."""
    new_tokens = 300 if quick else 1000
    threads = 1  # one reply's operations are too small to split across cores; the other core serves another
    print(f"\n(e) decoding one reply of {new_tokens} characters, batch 1, {threads} thread (best of 3; compile apart)")
    print(f"    {'model':30s} {'path':9s} {'dtype':>8s} {'chars/s':>8s} {'vs generate':>11s} {'compile':>8s} {'same tokens':>11s} {'peak RSS':>9s}")
    facts = devices.probe(device)
    dtypes = ("float32", "bfloat16") if facts.device_type != "cpu" or facts.cpu_bf16 else ("float32",)
    rows = []
    for shape in DECODE_SHAPES:
        for dtype in dtypes:
            for path in DECODE_PATHS:
                if path == "compiled" and not devices.can_compile(facts)[0]:
                    continue
                row = in_subprocess({"kind": "decode", "shape_name": shape, "path": path, "new_tokens": new_tokens,
                                     "device": device, "threads": threads, "dtype": dtype})
                row.update(shape=shape, path=path, dtype=dtype)
                rows.append(row)
                base = next(r for r in rows if r["shape"] == shape and r["path"] == "generate"
                            and r["dtype"] == "float32")["tokens_per_s"]
                compile_text = f"{row['compile_s']:7.1f}s" if path == "compiled" else ""
                print(f"    {shape:30s} {path:9s} {dtype:>8s} {row['tokens_per_s']:8.0f} {row['tokens_per_s'] / base:10.2f}x "
                      f"{compile_text:>8s} {'yes' if row['same_tokens'] else 'NO':>11s} {row['peak_rss_mb']:7.0f}MB")
    if device.startswith("cuda"):
        print("    on cuda the compiled step could also be captured as a CUDA graph (mode='reduce-overhead'); "
              "not measured here")
    return rows



# ----------------------------------------------------------------------------------------------
# (g) A training step against nanoGPT's


LECTURE_STEP = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=16, dropout=0.2)


def step_vs_nanogpt(nanogpt: str, data: str, short: int = 4, long: int = 12, rounds: int = 3) -> list[dict]:
    """Milliseconds per training step at the lecture's shape (6 x 384, context 256, batch 16,
    dropout 0.2, AdamW, no compile, the CPU) for nanoGPT's train.py (float32: its CPU path) and ours
    in float32 and in bfloat16 autocast, each timed as the difference between whole runs of `short`
    and `long` steps, so start-up, evaluation and saving cancel; the programs alternate within each
    of `rounds` rounds and the median is kept. Both use learned positions and GELU, as nanoGPT
    does. nanoGPT is a clone you give (--nanogpt=DIR, git clone https://github.com/karpathy/nanoGPT):
    its char data is prepared there from our copy of the corpus."""
    if not (Path(nanogpt) / "train.py").is_file():
        raise SystemExit("--only=nanogpt needs --nanogpt=DIR, a clone of https://github.com/karpathy/nanoGPT")
    corpus = Path(data or os.environ.get("TINYSHAKESPEARE", "data/tinyshakespeare/input.txt")).resolve()
    char_data = Path(nanogpt) / "data" / "shakespeare_char"
    if not (char_data / "train.bin").is_file():
        (char_data / "input.txt").write_bytes(corpus.read_bytes())
        subprocess.run([sys.executable, "prepare.py"], cwd=char_data, check=True, capture_output=True)
    shape = [f"--{name}={value}" for name, value in LECTURE_STEP.items()]
    theirs = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
              "--dtype=float32", "--bias=True", "--eval_interval=100000", "--eval_iters=1", "--log_interval=100000",
              "--always_save_checkpoint=False", "--out_dir=/tmp/bench-nanogpt", *shape]
    ours = [sys.executable, str(ROOT / "gpt_final_version.py"), "--preset=cpu", "--device=cpu", "--optimizer=adamw",
            "--qk_norm=false", "--compile=false", "--position=learned", "--activation=gelu", "--eval_interval=100000",
            "--eval_iters=1", f"--data={corpus}", "--out=/tmp/bench-ours.pt", "--notes=", "--samples_dir=",
            "--sample_chars=0", "--progress=false", "--learning_rate=1e-3", *shape]
    programs = [("nanoGPT train.py, float32", theirs, nanogpt), ("ours, float32", [*ours, "--dtype=float32"], None),
                ("ours, bfloat16 autocast", [*ours, "--dtype=bfloat16"], None)]
    print(f"\n(g) a training step at the lecture's shape against nanoGPT's train.py, cpu, no compile: runs of "
          f"{short} and {long} steps, ms/step = the difference / {long - short}, median of {rounds} alternating rounds")
    measured: dict[str, list[float]] = {name: [] for name, _, _ in programs}
    for _ in range(rounds):
        for name, command, cwd in programs:
            seconds = {}
            for steps in (short, long):
                started = time.perf_counter()
                subprocess.run([*command, f"--max_iters={steps}"], cwd=cwd, check=True, capture_output=True)
                seconds[steps] = time.perf_counter() - started
            measured[name].append(1000 * (seconds[long] - seconds[short]) / (long - short))
    rows = [{"program": name, "ms_per_step_rounds": times, "ms_per_step": sorted(times)[len(times) // 2]}
            for name, times in measured.items()]
    for row in rows:
        print(f"    {row['program']:28s} {row['ms_per_step']:8.0f} ms/step  {rows[0]['ms_per_step'] / row['ms_per_step']:5.2f}x "
              f"nanoGPT  (rounds: {', '.join(f'{t:.0f}' for t in row['ms_per_step_rounds'])})")
    return rows


if __name__ == "__main__":
    run_cli(main)
