"""What --task=classify reaches on two small invented tasks, from the shipped character model and from scratch.

    python -m benchmarks.classify                      # every run below: a table, and benchmarks/results/classify.json
    python -m benchmarks.classify --only=reviews --max_iters=100
    python -m benchmarks.classify --write_reviews=tests/fixtures/classify/reviews.csv   # the second task's file

The tasks:
  * senders: "who wrote this?" over the invented example chat (data/chat/example_whatsapp.txt, Ana
    Silva and Bruno Costa), made with python chat_data.py data/chat/example_whatsapp.txt --senders.
  * reviews: positive or negative, invented restaurant reviews (tests/fixtures/classify/reviews.csv,
    written by write_reviews below from hand-written phrases; negations such as "not bad at all"
    and "never again" make a model read more than single words).
Each is trained from scratch (the classify preset's 4 x 128 model), and from models/shakespeare_char.pt
with everything (mean pooling, the default, and the last token's), the last block, the head alone, or LoRA training. The figures are the held-out test split's.
"""
from __future__ import annotations

import csv
import json
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

from gptlib import cli
from gptlib.atomic_write import write_text_atomically
from gptlib.errors import UserError, run_cli

USAGE = "usage: python -m benchmarks.classify [--only=senders,reviews] [--max_iters=300] [--write_reviews=PATH]"
RESULTS = Path("benchmarks/results/classify.json")
SHIPPED = "models/shakespeare_char.pt"
REVIEWS = "tests/fixtures/classify/reviews.csv"
RUNS = {  # name -> the options that make it (beside --task, --data and --max_iters)
    "scratch": [],
    "shipped, all": [f"--init_from={SHIPPED}"],
    "shipped, all, last": [f"--init_from={SHIPPED}", "--pooling=last"],
    "shipped, last block": [f"--init_from={SHIPPED}", "--trainable=last"],
    "shipped, head only": [f"--init_from={SHIPPED}", "--trainable=head", "--learning_rate=3e-3"],
    "shipped, LoRA r=8": [f"--init_from={SHIPPED}", "--lora_rank=8", "--learning_rate=3e-3"],
}


@dataclass
class ClassifyBenchConfig:
    only: str = "senders,reviews"  # the tasks to run, comma-separated
    runs: str = ""  # the runs to make, comma-separated names of RUNS (scratch, "shipped, all", ...); empty: all
    max_iters: int = 300  # steps of each run (the classify preset's)
    out_dir: str = "models/classify-bench"  # where the runs' checkpoints go
    threads: int = 1  # CPU threads for the runs (torch.set_num_threads): on a 2-core machine shared with other jobs one thread ran 10x faster than two; 0: torch's default
    write_reviews: str = ""  # only write the reviews task's CSV here, and stop


# ----------------------------------------------------------------------------------------------
# The second task's data: invented reviews, from hand-written phrases


DISHES = ["pasta", "soup", "burger", "curry", "pizza", "salad", "fish", "risotto", "ramen", "cake", "tacos", "steak"]
OPENERS = ["went on a friday night.", "took my mum for her birthday.", "quick lunch with colleagues.", "second visit.",
           "booked a table for four.", "walked in without a booking.", "ordered to take away.", "", "", ""]
NEUTRAL = ["the menu is short.", "parking was easy enough.", "it was busy.", "we sat by the window.", "they take cards.",
           "it is near the station."]
POSITIVE = ["the {d} was delicious.", "best {d} i have had in years.", "not bad at all, we will be back.",
            "the staff were lovely.", "worth every penny.", "came out hot and fast.", "i would not change a thing.",
            "cozy place, great music.", "portions were generous.", "never had a better {d}.", "the {d} was perfect.",
            "friendly and quick service.", "we left happy and full.", "can't wait to come back.",
            "the {d} alone is worth the trip.", "no complaints at all.", "they made the {d} just how i asked.",
            "lovely {d}, fair prices.", "the owner remembered us.", "everything tasted fresh."]
NEGATIVE = ["the {d} was cold.", "not worth the price.", "waited an hour for the {d}.", "would not go back.",
            "the staff ignored us.", "far too salty.", "never again.", "not good at all.", "overpriced and bland.",
            "the {d} tasted of nothing.", "the {d} was burnt.", "rude and slow service.", "we left hungry.",
            "can't recommend it.", "the {d} was not what we ordered.", "nothing tasted fresh.",
            "the table was sticky.", "they forgot the {d}.", "tiny {d}, huge bill.", "the worst {d} i have had."]


def reviews(n: int = 300, seed: int = 30) -> list[tuple[str, str]]:
    """n different reviews, about 60% positive: an opener, one or two phrases of their kind, sometimes a
    neutral one (no text twice: a repeat in the test split would be a text seen in training)."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = "positive" if rng.random() < 0.6 else "negative"
        phrases = rng.sample(POSITIVE if label == "positive" else NEGATIVE, rng.choice([1, 1, 2]))
        if rng.random() < 0.4:
            phrases.insert(rng.randint(0, len(phrases)), rng.choice(NEUTRAL))
        text = " ".join(filter(None, [rng.choice(OPENERS), *phrases])).format(d=rng.choice(DISHES))
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def write_reviews(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(reviews())
    print(f"wrote {path}")


def task_data(task: str, folder: Path) -> str:
    """The labelled file of a task, made if it is not there."""
    if task == "reviews":
        if not Path(REVIEWS).is_file():
            write_reviews(REVIEWS)
        return REVIEWS
    from chat.pipeline import main as chat_data

    path = folder / "senders.jsonl"
    chat_data(["data/chat/example_whatsapp.txt", "--senders", f"--out={path}"])
    return str(path)


# ----------------------------------------------------------------------------------------------
# The runs


def run_one(task: str, data: str, name: str, options: ClassifyBenchConfig) -> dict:
    import gpt_final_version

    out = Path(options.out_dir) / f"{task}-{name.replace(', ', '-').replace(' ', '-').replace('=', '')}.pt"
    argv = ["--task=classify", f"--data={data}", f"--out={out}", f"--max_iters={options.max_iters}", "--device=cpu",
            "--progress=false", "--notes=", *RUNS[name]]
    started = time.time()
    result = gpt_final_version.main(argv)
    m = result.test_metrics
    return {"task": task, "run": name, "command": "python gpt_final_version.py " + " ".join(argv),
            "test_accuracy": round(m["accuracy"], 4), "test_macro_f1": round(m["macro_f1"], 4),
            "majority_baseline": round(m["majority_baseline"], 4), "test_texts": m["examples"],
            "val_loss": round(result.val_loss, 4), "params": result.params, "seconds": round(time.time() - started, 1)}


def main(argv: list[str]) -> list[dict] | None:
    args = cli.parse_args(argv, [ClassifyBenchConfig])
    if args.help:
        print(cli.help_text([ClassifyBenchConfig], USAGE, show_presets=False))
        return None
    options = cli.apply(ClassifyBenchConfig(), args.overrides)
    if options.write_reviews:
        write_reviews(options.write_reviews)
        return None
    names = [n.strip() for n in options.runs.split(",")] if options.runs else list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise UserError(f"--runs: {', '.join(unknown)} unknown; runs: {', '.join(RUNS)}.")
    folder = Path(options.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if options.threads:
        import torch
        torch.set_num_threads(options.threads)
    rows = []
    for task in [t.strip() for t in options.only.split(",") if t.strip()]:
        if task not in ("senders", "reviews"):
            raise UserError(f"--only: {task!r} is not a task; tasks: senders, reviews.")
        data = task_data(task, folder)
        rows += [run_one(task, data, name, options) for name in names]
    print(f"\n{'task':8} {'run':22} {'accuracy':>9} {'macro F1':>9} {'commonest':>9} {'seconds':>8}")
    for row in rows:
        print(f"{row['task']:8} {row['run']:22} {row['test_accuracy']:9.3f} {row['test_macro_f1']:9.3f} "
              f"{row['majority_baseline']:9.3f} {row['seconds']:8.1f}")
    summary = {"max_iters": options.max_iters, "threads": options.threads, "machine": platform.processor() or platform.machine(),
               "runs": rows}
    write_text_atomically(RESULTS, json.dumps(summary, indent=1) + "\n")
    print(f"written to {RESULTS}")
    return rows


if __name__ == "__main__":
    run_cli(main)
