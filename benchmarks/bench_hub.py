"""Our GPT against transformers on the shapes of today's small open models (random weights: speed
does not depend on their values): decode tokens/s at batch 1 (ours: the KV-cache engine, eager, in
float32 and with --dtype=int8's int8 linear layers, and that int8 step compiled as serve.py --compile=true
compiles it; theirs: generate() with its cache, float32), and a LoRA training step (ours: lora.py on the attention and MLP;
theirs: peft on q, k, v, o, gate, up and down), with the peak memory each process held. Prints a table and writes
the same numbers as JSON.

    python -m benchmarks.bench_hub                 # SmolLM2-135M and Qwen2.5-0.5B shapes, ~12 minutes on 2 cores
    python -m benchmarks.bench_hub --quick         # SmolLM2-135M only, fewer tokens, nothing compiled
    python -m benchmarks.bench_hub --no_compile    # without the compiled int8 step (about 3 minutes a shape to compile)
    python -m benchmarks.bench_hub --help          # these lines, nothing run

Each pair is measured in one process, alternating ours and theirs round by round (the median of
three rounds), so a busy machine slows both alike and the ratio holds. Our LoRA step runs in the
dtype a training run here would choose (bfloat16 autocast on a CPU with bfloat16 units, for these
shapes), peft's in transformers' default float32 and, like with like, under the same autocast.
Peak memory comes from a child process per side (--memory_of=ours|theirs --shape=NAME). Needs
requirements-dev.txt (transformers, peft).
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gptlib.errors import run_cli
from gptlib.quantize import quantize_int8

RESULTS = Path("benchmarks/results")
SHAPES = {  # the real models' config.json shapes (../shared/data/*/config.json), fewer layers where noted
    "SmolLM2-135M": dict(family="LlamaConfig", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True),
    "Qwen2.5-0.5B": dict(family="Qwen2Config", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=2048, rope_theta=1e6, tie_word_embeddings=True),
}
PROMPT, NEW_TOKENS, LORA_BATCH, LORA_CONTEXT, ROUNDS = 32, 64, 4, 128, 3


def reference_and_ours(shape: dict, directory: Path):
    import transformers

    from config import GPTConfig
    from gpt_final_version import GPT
    from gptlib import pretrained

    settings = {k: v for k, v in shape.items() if k != "family"}
    torch.manual_seed(0)
    theirs = transformers.AutoModelForCausalLM.from_config(getattr(transformers, shape["family"])(**settings)).eval()
    theirs.save_pretrained(directory)
    state = pretrained.load_pretrained(str(directory))
    ours = GPT(GPTConfig(**state["model_config"])).eval()
    ours.load_state_dict(state["model"])
    return theirs, ours


def decode_seconds_ours(model, prompt: list[int], new: int, compiled: bool = False) -> float:
    from gptlib.engine import TokenStream, decoder_for

    started = time.perf_counter()
    made = list(TokenStream(decoder_for(model, compiled=compiled), prompt, new, temperature=0))
    assert len(made) == new
    return time.perf_counter() - started


def decode_seconds_theirs(model, prompt: list[int], new: int) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(torch.tensor([prompt]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       use_cache=True, pad_token_id=0)
    return time.perf_counter() - started


def training_autocast(n_embd: int, tokens: int):
    """The autocast a training run of ours would choose for this step here (--dtype=auto):
    bfloat16 on a CPU that multiplies it in hardware when the step is matmul-bound, else none."""
    from gptlib import devices

    choice = devices.choose_dtype("auto", devices.probe("cpu"), devices.StepShape(n_embd, tokens))
    return choice.dtype, devices.autocast_context(choice)


def lora_step_ours(model, x, y, autocast):
    from gptlib import lora

    lora.add_adapters(model, 8, 16.0)
    lora.freeze_all_but_adapters(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def lora_step_theirs(model, x, y):
    """peft's step; called with an autocast context, it runs under it (float32 otherwise)."""
    import contextlib

    import peft

    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                       "gate_proj", "up_proj", "down_proj"]))  # our default, attn,mlp
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(autocast=None):
        with autocast or contextlib.nullcontext():
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def alternate(ours, theirs, rounds: int = ROUNDS) -> tuple[float, float]:
    """Median seconds of each, measured in turns after one warm-up call each."""
    medians = alternate_all({"ours": ours, "theirs": theirs}, rounds)
    return medians["ours"], medians["theirs"]


def alternate_all(runs: dict, rounds: int = ROUNDS) -> dict[str, float]:
    """alternate() for any number of subjects: name -> median seconds."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def peak_rss_mb() -> float:
    """Peak resident memory in MB since the process began (or since forget_peak_memory, on Linux)."""
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM")) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compile_seconds(model) -> float:
    """Seconds to compile `model`'s decode step (serve.py --compile=true pays them once, at start-up)."""
    from gptlib.engine import compiled_step

    started = time.perf_counter()
    with torch.no_grad():
        compiled_step(model)
    return time.perf_counter() - started


def measure(name: str, shape: dict, new_tokens: int, compiled: bool) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        theirs, ours = reference_and_ours(shape, Path(directory))
    prompt = torch.randint(0, shape["vocab_size"], (PROMPT,), generator=torch.Generator().manual_seed(0)).tolist()
    ours_int8 = copy.deepcopy(ours)
    quantize_int8(ours_int8, "cpu")
    runs = {"ours": lambda: decode_seconds_ours(ours, prompt, new_tokens),
            "int8": lambda: decode_seconds_ours(ours_int8, prompt, new_tokens),
            "theirs": lambda: decode_seconds_theirs(theirs, prompt, new_tokens)}
    compiling = compile_seconds(ours_int8) if compiled else None
    if compiled:
        runs["int8_compiled"] = lambda: decode_seconds_ours(ours_int8, prompt, new_tokens, compiled=True)
    decode = alternate_all(runs)
    decode_ours, decode_theirs = decode["ours"], decode["theirs"]
    x = torch.randint(0, shape["vocab_size"], (LORA_BATCH, LORA_CONTEXT), generator=torch.Generator().manual_seed(1))
    y = torch.cat([x[:, 1:], torch.full((LORA_BATCH, 1), -1)], dim=1)  # HF shifts labels itself; ours are shifted here
    dtype, autocast = training_autocast(shape["hidden_size"], LORA_BATCH * LORA_CONTEXT)
    theirs_step = lora_step_theirs(theirs, x, y)
    step_ours, step_theirs = alternate(lora_step_ours(ours, x, y, autocast), theirs_step)
    row = {"shape": name, "decode_tokens_per_s_ours": new_tokens / decode_ours,
           "decode_tokens_per_s_transformers": new_tokens / decode_theirs, "decode_ratio": decode_theirs / decode_ours,
           "decode_tokens_per_s_ours_int8": new_tokens / decode["int8"], "decode_ratio_int8": decode_theirs / decode["int8"],
           "lora_dtype_ours": dtype, "lora_step_s_ours": step_ours, "lora_step_s_peft": step_theirs,
           "lora_ratio": step_theirs / step_ours, "threads": torch.get_num_threads()}
    if compiled:
        row.update(decode_tokens_per_s_ours_int8_compiled=new_tokens / decode["int8_compiled"],
                   decode_ratio_int8_compiled=decode_theirs / decode["int8_compiled"], compile_s_int8=compiling)
    if dtype != "float32":  # like with like too: peft under the same autocast
        _, autocast = training_autocast(shape["hidden_size"], LORA_BATCH * LORA_CONTEXT)
        row["lora_step_s_peft_same_dtype"] = alternate(lambda: None, lambda: theirs_step(autocast))[1]
        row["lora_ratio_same_dtype"] = row["lora_step_s_peft_same_dtype"] / step_ours
    return row


def peak_memory_mb(name: str, side: str) -> float:
    """Peak RSS of a process that builds one side's model and takes its decode and LoRA steps."""
    import subprocess
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_hub", f"--memory_of={side}", f"--shape={name}"],
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def memory_child(name: str, side: str) -> None:
    """One side alone (--memory_of): its model, 8 decoded tokens and two LoRA steps; prints peak RSS in MB."""
    shape = SHAPES[name]
    with tempfile.TemporaryDirectory() as directory:
        theirs, ours = reference_and_ours(shape, Path(directory))
    model = ours if side == "ours" else theirs
    del theirs, ours
    forget_peak_memory()  # the other side was built too (ours loads from its files): count only this one's use
    prompt = list(range(1, PROMPT + 1))
    x = torch.randint(0, shape["vocab_size"], (LORA_BATCH, LORA_CONTEXT), generator=torch.Generator().manual_seed(1))
    y = torch.cat([x[:, 1:], torch.full((LORA_BATCH, 1), -1)], dim=1)
    if side == "ours":
        decode_seconds_ours(model, prompt, 8)
        step = lora_step_ours(model, x, y, training_autocast(shape["hidden_size"], LORA_BATCH * LORA_CONTEXT)[1])
    else:
        decode_seconds_theirs(model, prompt, 8)
        step = lora_step_theirs(model, x, y)
    step(), step()
    print(peak_rss_mb())


def forget_peak_memory() -> None:
    """Free what was dropped and restart the kernel's count of this process's peak RSS (Linux: VmHWM)."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # elsewhere the peak includes building both models
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv:
        print(__doc__)
        return []
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    if "memory_of" in options:
        return memory_child(options["shape"], options["memory_of"])
    quick = "--quick" in argv
    compiled = not quick and "--no_compile" not in argv
    rows = [measure(name, shape, NEW_TOKENS // 2 if quick else NEW_TOKENS, compiled)
            for name, shape in SHAPES.items() if not quick or name == "SmolLM2-135M"]
    for row in rows:
        row["peak_rss_mb_ours"], row["peak_rss_mb_theirs"] = (peak_memory_mb(row["shape"], side) for side in ("ours", "theirs"))
    print("| shape | decode tok/s ours | transformers | ratio | ours int8 | ratio | int8 compiled (compile s) | ratio "
          "| LoRA step s ours (dtype) | peft float32 | ratio | peft, our dtype | ratio | peak RSS MB ours | theirs |\n"
          + "| --- " * 15 + "|")
    for r in rows:
        same = (f"{r['lora_step_s_peft_same_dtype']:.2f} | {r['lora_ratio_same_dtype']:.2f}x"
                if "lora_ratio_same_dtype" in r else "- | -")
        built = (f"{r['decode_tokens_per_s_ours_int8_compiled']:.1f} ({r['compile_s_int8']:.0f}) | "
                 f"{r['decode_ratio_int8_compiled']:.2f}x" if "compile_s_int8" in r else "- | -")
        print(f"| {r['shape']} | {r['decode_tokens_per_s_ours']:.1f} | {r['decode_tokens_per_s_transformers']:.1f} | "
              f"{r['decode_ratio']:.2f}x | {r['decode_tokens_per_s_ours_int8']:.1f} | {r['decode_ratio_int8']:.2f}x | {built} | "
              f"{r['lora_step_s_ours']:.2f} ({r['lora_dtype_ours']}) | {r['lora_step_s_peft']:.2f} | "
              f"{r['lora_ratio']:.2f}x | {same} | {r['peak_rss_mb_ours']:.0f} | {r['peak_rss_mb_theirs']:.0f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_hub.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    run_cli(main)
