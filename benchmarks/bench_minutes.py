"""Quality per minute: train each lever for the same wall-clock budget, score every model on the
whole val split, print one table (issue 16; the README's "Ten minutes on 2 cores" table).

    python -m benchmarks.bench_minutes --data=PATH                      # every lever, 10 minutes each
    python -m benchmarks.bench_minutes --data=PATH --levers=base,muon --minutes=10
    python -m benchmarks.bench_minutes --data=PATH --score_only         # the table from the runs already in --dir

Each lever is `python gpt_final_version.py --device=cpu --max_minutes=M` with its options, run one
after another in their own processes (two at once would share the cores and each would see half
the machine). A lever whose checkpoint is already in --dir is not trained again, so an interrupted
table picks up where it stopped. The runs' own val estimates use eval_iters random windows; the
"whole val" column scores every val token once, in consecutive windows of the model's context, so
levers that change the batch or the context compare on the same text.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import torch

from gptlib.corpus import TextDataset, read_text
from gptlib.errors import UserError, run_cli
from model_handler import ModelHandler

# name -> (what changes, the options). Every lever is measured against "base", the cpu preset as it
# was before issue 16 (AdamW, cosine schedule). The options pin what the preset has changed since,
# so that each row keeps its meaning; "preset" is the cpu preset as it is now.
ADAMW = ["--optimizer=adamw", "--qk_norm=false"]
MUON = ["--optimizer=muon", "--qk_norm=false", "--muon_weight_decay=0"]
MUON_QK = ["--optimizer=muon", "--qk_norm=true"]
LEVERS = {
    "base": ("AdamW, cosine (the cpu preset before)", ADAMW),
    "dropout": ("dropout 0.1", [*ADAMW, "--dropout=0.1"]),
    "lr3": ("peak learning rate 3e-3", [*ADAMW, "--learning_rate=3e-3", "--min_lr=3e-4"]),
    "batch32": ("batch 32", [*ADAMW, "--batch_size=32"]),
    "ctx64": ("context 64", [*ADAMW, "--block_size=64"]),
    "tied": ("tied embeddings", [*ADAMW, "--tie_embeddings=true"]),
    "narrow128": ("128 wide (0.81M parameters)", [*ADAMW, "--n_embd=128"]),
    "wsd": ("warm-up/stable/decay schedule", [*ADAMW, "--schedule=wsd"]),
    "qknorm": ("QK-norm", [*ADAMW, "--qk_norm=true"]),
    "muon": ("Muon for the matrices", MUON),
    "muon_wsd": ("Muon + warm-up/stable/decay", [*MUON, "--schedule=wsd"]),
    "narrow_muon": ("Muon, 128 wide", [*MUON, "--n_embd=128"]),
    "muon_tied": ("Muon + tied embeddings", [*MUON, "--tie_embeddings=true"]),
    "muon_lr03": ("Muon at peak rate 0.03", [*MUON, "--muon_lr=0.03"]),
    "muon_qknorm": ("Muon + QK-norm", [*MUON_QK, "--muon_weight_decay=0"]),
    "mq_drop05": ("Muon + QK-norm + dropout 0.05", [*MUON_QK, "--muon_weight_decay=0", "--dropout=0.05"]),
    "mq_wd01": ("Muon + QK-norm + Muon weight decay 0.01", [*MUON_QK, "--muon_weight_decay=0.01"]),
    "mq_wd05": ("Muon + QK-norm + Muon weight decay 0.05", [*MUON_QK, "--muon_weight_decay=0.05"]),
    "mq_wd10": ("Muon + QK-norm + Muon weight decay 0.1", [*MUON_QK, "--muon_weight_decay=0.1"]),
    "muon_wd05": ("Muon + Muon weight decay 0.05 (no QK-norm)", [*MUON, "--muon_weight_decay=0.05"]),
    "preset": ("the cpu preset now", []),
}


def train_lever(name: str, options: list[str], minutes: float, data: str, folder: Path) -> None:
    checkpoint = folder / f"{name}.pt"
    if checkpoint.exists():
        return
    command = [sys.executable, "gpt_final_version.py", "--device=cpu", f"--max_minutes={minutes:g}", f"--data={data}",
               f"--out={checkpoint}", f"--notes={folder / 'notes.txt'}", f"--samples_dir={folder}",
               "--progress=false", *options]
    print(f"training {name} for {minutes:g} minutes: {' '.join(options) or '(preset)'}", flush=True)
    with open(folder / f"{name}.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=Path(__file__).resolve().parents[1])


@torch.no_grad()
def whole_split_loss(model, ids: torch.Tensor, block_size: int, batch: int = 64) -> float:
    """Mean cross-entropy over every token of `ids` after the first, in consecutive windows."""
    ids = ids.long()  # a corpus may hold its ids in uint8 or uint16
    usable = (len(ids) - 1) // block_size * block_size
    inputs = ids[:usable].view(-1, block_size)
    targets = ids[1:usable + 1].view(-1, block_size)
    total = 0.0
    for start in range(0, len(inputs), batch):
        _, loss = model(inputs[start:start + batch], targets[start:start + batch])
        total += loss.item() * inputs[start:start + batch].numel()
    return total / usable


def final_line(log: Path) -> dict:
    """The numbers of a run's `final:` line (iters, val_loss, tokens_per_s...)."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("final:")]
    if not lines:
        return {}
    return {key: value for key, value in re.findall(r"(\w+)=(\S+)", lines[-1])}


def score(name: str, folder: Path, text: str) -> dict:
    handler = ModelHandler(str(folder / f"{name}.pt"), "cpu").load()
    dataset = TextDataset.from_text(text, handler.vocab)
    loss = whole_split_loss(handler.model.eval(), dataset.splits["val"], handler.model.config.block_size)
    run = final_line(folder / f"{name}.log")
    return {"lever": name, "change": LEVERS.get(name, ("", []))[0], "steps": int(run.get("iters", 0)),
            "tokens_per_s": float(run.get("tokens_per_s", 0)), "val_estimate": float(run.get("val_loss", math.nan)),
            "val_whole": loss, "params": handler.model.num_params()}


def print_table(rows: list[dict], minutes: float) -> None:
    base = next((r["val_whole"] for r in rows if r["lever"] == "base"), None)
    print("\n| lever | change | params | steps | tokens/s | val (run's estimate) | val, whole split | vs base |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        delta = f"{r['val_whole'] - base:+.4f}" if base is not None and r["lever"] != "base" else ""
        print(f"| {r['lever']} | {r['change']} | {r['params'] / 1e6:.2f}M | {r['steps']:,} | {r['tokens_per_s']:,.0f} "
              f"| {r['val_estimate']:.4f} | {r['val_whole']:.4f} | {delta} |")
    print(f"\n{minutes:g} minutes each, --device=cpu; lower val is better.")


def parse(argv: list[str]) -> dict:
    options = {"data": "data/tinyshakespeare/input.txt", "minutes": "10", "levers": ",".join(LEVERS),
               "dir": "benchmarks/results/minutes", "score_only": "false", "json": ""}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__ + "\nlevers: " + ", ".join(f"{k} ({v[0]})" for k, v in LEVERS.items()))
            sys.exit(0)
        key, _, value = arg.lstrip("-").partition("=")
        if key not in options:
            raise UserError(f"unknown option --{key}; options: {', '.join('--' + k for k in options)}")
        options[key] = value or "true"
    unknown = [name for name in options["levers"].split(",") if name not in LEVERS]
    if unknown:
        raise UserError(f"unknown lever(s) {', '.join(unknown)}; levers: {', '.join(LEVERS)}")
    return options


def main(argv: list[str]) -> None:
    options = parse(argv)
    folder, minutes = Path(options["dir"]), float(options["minutes"])
    folder.mkdir(parents=True, exist_ok=True)
    names = options["levers"].split(",")
    text = read_text(options["data"])
    if options["score_only"] != "true":
        for name in names:
            train_lever(name, LEVERS[name][1], minutes, options["data"], folder)
    rows = [score(name, folder, text) for name in names if (folder / f"{name}.pt").exists()]
    print_table(rows, minutes)
    if options["json"]:
        Path(options["json"]).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    run_cli(main)
