"""What this CPU does with bfloat16: matmul throughput by dtype, and a training step (forward,
backward, optimizer) in float32 against bfloat16 autocast at several model shapes, with the
choice --dtype=auto makes for each. Prints a table and writes the same numbers as JSON.

    python -m benchmarks.bench_dtype            # ~4 minutes on 2 CPU cores
    python -m benchmarks.bench_dtype --quick    # fewer steps and shapes, ~1 minute
    python -m benchmarks.bench_dtype --help     # these lines, nothing run

Both dtypes of a shape are measured in one process, alternating round by round (the median of
three rounds), so a busy machine slows both alike and the ratio holds. Weights, gradients and
optimizer state stay float32 in both, as training keeps them.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bench import RandomTokens
from config import GPTConfig, TrainConfig, preset_values
from gptlib import devices, optimizers, train
from gptlib.cli import apply
from gptlib.errors import run_cli

RESULTS = Path("benchmarks/results")
MATMULS = [(4096, 384, 1536), (4096, 1536, 384), (2048, 192, 768), (16384, 768, 3072)]  # (m, k, n)
SHAPES = {  # name: settings over the dataclass defaults
    "quick preset 4x128, ctx 64, batch 32": preset_values("quick"),
    "cpu preset 4x192, ctx 128, batch 16": preset_values("cpu"),
    "6x256, ctx 256, batch 16": {**preset_values("cpu"), "n_layer": 6, "n_head": 4, "n_embd": 256, "block_size": 256},
    "lecture 6x384, ctx 256, batch 16, dropout 0": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=16,
                                                        dropout=0.0, position="rope", activation="relu2"),
    "lecture 6x384, ctx 256, batch 16, dropout 0.2": dict(n_layer=6, n_head=6, n_embd=384, block_size=256,
                                                          batch_size=16, dropout=0.2),
}
QUICK_SHAPES = ("cpu preset 4x192, ctx 128, batch 16", "lecture 6x384, ctx 256, batch 16, dropout 0")


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 0.5) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - start) / 1e9


class Stepper:
    """One shape's model, optimizer and batches; step(dtype) times optimizer steps in that dtype."""

    def __init__(self, values: dict):
        torch.manual_seed(0)
        self.model_cfg = apply(GPTConfig(vocab_size=65), values)
        self.cfg = apply(TrainConfig(), values)
        from gpt_final_version import GPT

        self.model = GPT(self.model_cfg)
        self.optimizer = optimizers.configure_optimizer(self.model, self.cfg, "cpu")
        self.data = RandomTokens(65, self.cfg.batch_size, self.model_cfg.block_size)
        self.batches = torch.Generator().manual_seed(0)
        self.shape = devices.StepShape(self.model_cfg.n_embd, self.cfg.batch_size * self.model_cfg.block_size)

    def seconds_per_step(self, dtype: str, steps: int) -> float:
        facts = devices.probe("cpu")
        autocast = devices.autocast_context(devices.choose_dtype(dtype, facts))
        scaler = torch.amp.GradScaler(enabled=False)
        train.train_step(self.model, self.optimizer, scaler, self.data, self.cfg, self.model_cfg, "cpu", autocast,
                         self.batches)  # warm-up: the first step of a dtype allocates
        start = time.perf_counter()
        for _ in range(steps):
            train.train_step(self.model, self.optimizer, scaler, self.data, self.cfg, self.model_cfg, "cpu", autocast,
                             self.batches)
        return (time.perf_counter() - start) / steps


def step_rows(names, steps: int, rounds: int = 3) -> list[dict]:
    facts = devices.probe("cpu")
    rows = []
    for name in names:
        stepper = Stepper(SHAPES[name])
        times = {"float32": [], "bfloat16": []}
        for _ in range(rounds):
            for dtype in times:
                times[dtype].append(stepper.seconds_per_step(dtype, steps))
        f32, bf16 = (statistics.median(times[d]) for d in ("float32", "bfloat16"))
        auto = devices.choose_dtype("auto", facts, stepper.shape).dtype
        rows.append({"shape": name, "matmul_work": stepper.shape.matmul_work, "float32_ms": 1000 * f32,
                     "bfloat16_ms": 1000 * bf16, "ratio": f32 / bf16, "auto_picks": auto})
        print(f"| {name} | {stepper.shape.matmul_work:.1e} | {1000 * f32:,.0f} | {1000 * bf16:,.0f} | "
              f"{f32 / bf16:.2f}x | {auto} |", flush=True)
    return rows


def main(argv: list[str]) -> None:
    if "--help" in argv or "-h" in argv:
        print(__doc__)
        return
    quick = "--quick" in argv
    train.keep_freed_memory_in_process()  # as training does: without it each large step page-faults its memory again
    facts = devices.probe("cpu")
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_capability":
              torch.backends.cpu.get_cpu_capability(), "cpu_bf16": facts.cpu_bf16, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{report['cpu_capability']}, bfloat16 in hardware (AVX512-BF16 or AMX): {facts.cpu_bf16}\n")
    print("| matmul (m x k) @ (k x n) | float32 GFLOP/s | bfloat16 GFLOP/s | ratio |\n| --- | --- | --- | --- |")
    report["matmul"] = []
    for m, k, n in MATMULS[:2] if quick else MATMULS:
        f32, bf16 = matmul_gflops(m, k, n, torch.float32), matmul_gflops(m, k, n, torch.bfloat16)
        report["matmul"].append({"m": m, "k": k, "n": n, "float32": f32, "bfloat16": bf16})
        print(f"| ({m}x{k}) @ ({k}x{n}) | {f32:,.0f} | {bf16:,.0f} | {bf16 / f32:.2f}x |", flush=True)
    print("\n| training step (forward, backward, optimizer) | tokens x n_embd^2 | float32 ms | bfloat16 ms | "
          "float32 / bfloat16 | --dtype=auto picks |\n| --- | --- | --- | --- | --- | --- |")
    report["steps"] = step_rows(QUICK_SHAPES if quick else SHAPES, steps=3 if quick else 6)
    out = RESULTS / "dtype.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    run_cli(main)
