"""One served reply against the decoder alone: characters/s of one streamed reply over HTTP (one
client) and of the engine decoding the same tokens in this process. Prints a table, writes JSON.

    python -m benchmarks.bench_serve                          # this checkout's server against the decoder
    git archive 9863cd3 | (mkdir -p /tmp/before && tar -x -C /tmp/before)
    python -m benchmarks.bench_serve --before=/tmp/before     # and the server of that checkout, alternated
    python -m benchmarks.bench_serve --help                   # these lines, nothing run

Per-character time is the difference of a short and a long reply (--short, --long characters), so
start-up and the request's own overhead cancel; each round measures every subject once, in turn
(the machine is shared and noisy), and the table gives the medians of --rounds rounds. The servers
run `serve.py MODEL --compile=true --max_tokens=LONG` with every other option at its default (a
user's start-up); the decoder is gptlib/engine.py's TokenStream over the compiled step, in the dtype
and with the threads the server gives its batch. "same text" says whether the server sent exactly
the decoder's characters for the seed.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gptlib import cli, engine
from gptlib.corpus import seeded_generator
from gptlib.errors import UserError, run_cli
from model_handler import ModelHandler

ROOT = Path(__file__).resolve().parents[1]
USAGE = "usage: python -m benchmarks.bench_serve [--before=DIR] [--rounds=5] [--short=300] [--long=3300] [--json=PATH]"
PROMPT = "ROMEO:"
SEED = 1


@dataclass
class ServeBenchConfig:
    model: str = "models/shakespeare_char.pt"  # the shipped text model (1.8M): a reply never ends before --long
    before: str = ""  # a checkout of the code before a change (git archive COMMIT | tar -x -C DIR): its server is a row too
    rounds: int = 5  # each subject measured once per round, in turn; the medians are reported
    short: int = 300  # characters of the short reply
    long: int = 3300  # characters of the long reply; (long - short) / (t_long - t_short) is the figure
    compile: bool = True  # serve with --compile=true (and compile the decoder's step): the fast configuration
    json: str = "benchmarks/results/serve.json"  # where the figures go


# ----------------------------------------------------------------------------------------------
# The subjects: a server process, and the decoder in this process


class ServedReply:
    """serve.py from a checkout, in a child process; one streamed reply at a time over a fresh connection."""

    def __init__(self, label: str, checkout: Path, options: ServeBenchConfig):
        self.label = label
        model = (ROOT / options.model).resolve()
        command = [sys.executable, "serve.py", str(model), "--port=0", "--device=cpu", f"--max_tokens={options.long}",
                   f"--compile={'true' if options.compile else 'false'}"]
        started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = self.process.stdout.readline()
        port = re.search(r"http://[^:]+:(\d+)", first)
        if not port:
            self.process.kill()
            raise UserError(f"serve.py in {checkout} did not start: {first.strip()!r}")
        self.port, self.start_s = int(port.group(1)), time.perf_counter() - started

    def reply(self, characters: int) -> tuple[float, str]:
        """Seconds from sending the request to the stream's end, and the reply's text."""
        body = json.dumps({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": characters,
                           "seed": SEED, "stream": True})
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise UserError(f"{self.label}: the server answered {response.status}: {response.read()[:200]!r}")
        pieces = []
        for line in response:  # one event per line pair; read as it comes, as a client does
            if line.startswith(b"data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices:
                    pieces.append(choices[0]["delta"].get("content") or "")
        seconds = time.perf_counter() - started
        connection.close()
        return seconds, "".join(pieces)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


class DecoderAlone:
    """The engine decoding the same tokens as the server, in this process: the checkpoint in the dtype
    serving picks, the compiled (or eager) step, the server's thread count for its batch."""

    label = "decoder alone (engine)"

    def __init__(self, options: ServeBenchConfig):
        from serving.server import decode_threads

        self.handler = ModelHandler(str(ROOT / options.model), "cpu").load()
        self.dtype_note = self.handler.use_dtype("auto", options.compile)
        torch.set_num_threads(decode_threads(batched=True, concurrency=16, cores=os.cpu_count() or 1))
        started = time.perf_counter()
        if options.compile:
            engine.compiled_step(self.handler.model)
        self.compiled, self.start_s = options.compile, time.perf_counter() - started
        self.ids = self.handler.vocab.encode(PROMPT)

    def reply(self, characters: int) -> tuple[float, str]:
        started = time.perf_counter()
        decoder = engine.decoder_for(self.handler.model, compiled=self.compiled)
        tokens = list(engine.TokenStream(decoder, self.ids, characters, temperature=0.8,
                                         generator=seeded_generator(SEED)))
        seconds = time.perf_counter() - started
        return seconds, self.handler.vocab.decode(tokens)

    def stop(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# Measuring and reporting


def measure(subjects: list, options: ServeBenchConfig) -> dict[str, list[dict]]:
    """Every subject's short and long reply, in turn, once per round."""
    rounds: dict[str, list[dict]] = {s.label: [] for s in subjects}
    for subject in subjects:
        subject.reply(options.short)  # warm-up: first-request costs (allocations, caches) are not the figure
    for _ in range(options.rounds):
        for subject in subjects:
            short_s, short_text = subject.reply(options.short)
            long_s, long_text = subject.reply(options.long)
            rounds[subject.label].append({
                "chars_per_s": (len(long_text) - len(short_text)) / (long_s - short_s),
                "long_chars_per_s": len(long_text) / long_s, "short_s": short_s, "long_s": long_s,
                "text": long_text})
    return rounds


def summarise(subjects: list, rounds: dict[str, list[dict]]) -> list[dict]:
    decoder_rounds = rounds[DecoderAlone.label]
    rows = []
    for subject in subjects:
        measured = rounds[subject.label]
        chars_per_s = statistics.median(r["chars_per_s"] for r in measured)
        # the ratio taken round by round (a subject and the decoder measured minutes apart drift together)
        ratios = [r["chars_per_s"] / d["chars_per_s"] for r, d in zip(measured, decoder_rounds)]
        rows.append({"subject": subject.label, "chars_per_s": chars_per_s, "vs_decoder": statistics.median(ratios),
                     "whole_reply_chars_per_s": statistics.median(r["long_chars_per_s"] for r in measured),
                     "same_text": all(r["text"] == d["text"] for r, d in zip(measured, decoder_rounds)),
                     "start_s": subject.start_s, "rounds": [round(r["chars_per_s"], 1) for r in measured]})
    return rows


def print_table(rows: list[dict], options: ServeBenchConfig) -> None:
    print(f"\none streamed reply of {options.long} - {options.short} characters, {options.model}, "
          f"compile={'true' if options.compile else 'false'}, medians of {options.rounds} rounds")
    print(f"  {'subject':28s} {'chars/s':>8s} {'vs decoder':>10s} {'whole reply':>11s} {'same text':>9s} {'start':>7s}")
    for row in rows:
        print(f"  {row['subject']:28s} {row['chars_per_s']:8.0f} {row['vs_decoder']:9.2f}x "
              f"{row['whole_reply_chars_per_s']:11.0f} {'yes' if row['same_text'] else 'NO':>9s} {row['start_s']:6.1f}s")


def main(argv: list[str]) -> None:
    args = cli.parse_args(argv, [ServeBenchConfig])
    if args.help:
        print(cli.help_text([ServeBenchConfig], USAGE, show_presets=False))
        return
    options = cli.apply(ServeBenchConfig(), args.overrides)
    if not options.rounds >= 1 or not 0 < options.short < options.long:
        raise UserError("--rounds must be at least 1 and 0 < --short < --long.")
    if options.before and not (Path(options.before) / "serve.py").is_file():
        raise UserError(f"--before={options.before} has no serve.py: unpack a checkout there "
                        "(git archive 9863cd3 | tar -x -C DIR).")
    subjects = [DecoderAlone(options)]
    try:
        if options.before:
            subjects.append(ServedReply("server before", Path(options.before), options))
        subjects.append(ServedReply("server (this checkout)", ROOT, options))
        rows = summarise(subjects, measure(subjects, options))
    finally:
        for subject in subjects:
            subject.stop()
    print_table(rows, options)
    report = {"model": options.model, "compile": options.compile, "short": options.short, "long": options.long,
              "rounds": options.rounds, "cores": os.cpu_count(), "torch": torch.__version__,
              "dtype": subjects[0].dtype_note, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    Path(options.json).parent.mkdir(parents=True, exist_ok=True)
    Path(options.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {options.json}")


if __name__ == "__main__":
    run_cli(main)
