"""Loss curves beside each checkpoint: NAME.csv that any tool can plot, NAME.png when matplotlib is
installed, and one chart comparing several runs.

    rows.append(dict(step=500, tokens=1_024_000, train_loss=1.71, val_loss=1.86, learning_rate=1e-3,
                     tokens_per_s=6400.0, seconds=160.2))   # val_loss=None on rows without an eval
    write_csv(rows, "models/run.csv")                        # cheap: rewrite the whole file atomically
    rows = read_csv("models/run.csv", up_to_step=500)        # a resumed run continues its curve
    if not plot_run(rows, "models/run.png", "run (preset cpu)"):
        print(missing_matplotlib_hint("models/run.pt"))      # once: how to get the picture
    plot_comparison([("bigram", bigram_rows), ("cpu", cpu_rows)], "runs.png")   # --compare

Only the standard library is imported here; matplotlib is imported inside the plotting functions,
so training never needs it. The pictures are drawn on a bare `Figure`, never through pyplot: no
display is needed, and the backend of a user who already imported pyplot is left alone.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from gptlib.atomic_write import write_bytes_atomically, write_text_atomically
from gptlib.checkpoint import load_checkpoint
from gptlib.errors import UserError

COLUMNS = ("step", "tokens", "train_loss", "val_loss", "learning_rate", "tokens_per_s", "seconds")
# Losses to 4 decimals (how nanoGPT and our notes.txt report them); the learning rate in scientific
# notation so a decayed 3e-5 keeps its digits; throughput and time need no more than these.
FORMATS = dict(step="{:d}", tokens="{:d}", train_loss="{:.4f}", val_loss="{:.4f}",
               learning_rate="{:.3e}", tokens_per_s="{:.1f}", seconds="{:.2f}")
PARSERS = dict(step=int, tokens=int, train_loss=float, val_loss=float, learning_rate=float,
               tokens_per_s=float, seconds=float)

PLOT_INSTALL = "pip install -r requirements-plot.txt"
MISSING_MATPLOTLIB_HINT = (f"no loss-curve picture because matplotlib is not installed: {PLOT_INSTALL}, then "
                           "python model_handler.py NAME.pt --compare=NAME.png (or plot NAME.csv with any tool).")


def curve_paths(checkpoint) -> tuple[Path, Path]:
    """The CSV and the PNG that sit beside `checkpoint` (models/run.pt -> models/run.csv, .png)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_suffix(".csv"), checkpoint.with_suffix(".png")


def missing_matplotlib_hint(checkpoint) -> str:
    """MISSING_MATPLOTLIB_HINT with this run's paths in place of NAME."""
    return MISSING_MATPLOTLIB_HINT.replace("NAME", str(Path(checkpoint).with_suffix("")))


# ----------------------------------------------------------------------------------------------
# The CSV


def write_csv(rows: list[dict], path) -> None:
    """Rewrite `path` with every row: a thousand rows take a few milliseconds, fsync included."""
    lines = [",".join(COLUMNS)] + [_format_row(row) for row in rows]
    write_text_atomically(path, "\n".join(lines) + "\n")


def _format_row(row: dict) -> str:
    return ",".join("" if row.get(name) is None else FORMATS[name].format(row[name]) for name in COLUMNS)


def read_csv(path, up_to_step: int | None = None) -> list[dict]:
    """The rows `write_csv` wrote. A last line cut short is dropped (our writes are atomic, but a
    copy or a full disk elsewhere can cut one); a bad line before it is an error. `up_to_step` drops
    the rows after a checkpoint's step: a killed run wrote them, and the resumed run writes them again."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read the loss curve {path}: {err.strerror or err}.") from None
    header, *body = text.splitlines() or [""]
    if header != ",".join(COLUMNS):
        raise UserError(f"{path} is not a loss curve of this project (its first line should be {','.join(COLUMNS)}).")
    if body and (not text.endswith("\n") or _parse_row(body[-1]) is None):
        body.pop()  # cut short: even if it parses, its last number may be cut
    rows = []
    for number, line in enumerate(body, start=2):
        row = _parse_row(line)
        if row is None:
            raise UserError(f"{path}, line {number}: expected {len(COLUMNS)} numbers, got {line!r}.")
        rows.append(row)
    return [row for row in rows if up_to_step is None or row["step"] <= up_to_step]


def _parse_row(line: str) -> dict | None:
    cells = next(csv.reader([line]), [])
    if len(cells) != len(COLUMNS):
        return None
    try:
        return {name: PARSERS[name](cell) if cell else None for name, cell in zip(COLUMNS, cells)}
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# The pictures


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_run(rows: list[dict], path, title: str) -> bool:
    """Draw one run's train and val loss against steps (bottom) and tokens seen (top) into `path`.
    Returns False, having written nothing, when matplotlib is missing or there is nothing to draw."""
    if not rows or not matplotlib_available():
        return False
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4), dpi=120)
    axes = figure.add_subplot()
    few = len(rows) < 30  # a line needs two points: a run stopped early still shows its first ones
    axes.plot([row["step"] for row in rows], [row["train_loss"] for row in rows], color="C0", linewidth=1.2,
              marker="o" if few else None, markersize=2.5, clip_on=False,
              label="train loss (mean of the batches since the previous point)")
    evaluated = [row for row in rows if row["val_loss"] is not None]
    if evaluated:
        axes.plot([row["step"] for row in evaluated], [row["val_loss"] for row in evaluated], "o-", color="C1",
                  markersize=4, clip_on=False, label=f"val loss (last {evaluated[-1]['val_loss']:.4f})")
    last_step = rows[-1]["step"]
    axes.set_xlim(0, max(last_step, 1))  # no negative steps in the margins
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if last_step > 0:
        _add_tokens_axis(axes, rows)
    axes.set(xlabel="optimizer steps", ylabel="cross-entropy loss (nats)", title=title)
    _finish(axes)
    _save(figure, path)
    return True


def _add_tokens_axis(axes, rows: list[dict]) -> None:
    """Tokens seen along the top, linear between rows: the batch size may change when a run resumes."""
    from matplotlib.ticker import EngFormatter

    points = sorted({0: 0, **{row["step"]: row["tokens"] for row in rows}}.items())
    steps, tokens = [step for step, _ in points], [count for _, count in points]
    if any(later <= earlier for earlier, later in zip(tokens, tokens[1:])):
        return  # no step <-> tokens mapping both ways; the steps axis alone is still right
    top = axes.secondary_xaxis("top", functions=(_piecewise_linear(steps, tokens), _piecewise_linear(tokens, steps)))
    top.xaxis.set_major_formatter(EngFormatter(sep=""))
    top.set_xlabel("tokens seen")


def _piecewise_linear(xs: list[float], ys: list[float]):
    """Linear between the points and straight on past both ends: the tick locator asks for ticks
    beyond the data (np.interp alone would pile them up at the edge)."""
    import numpy as np  # matplotlib needs it, so it is there whenever this is called

    def interpolate(values):
        values = np.asarray(values, dtype=float)
        before = ys[0] + (values - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
        after = ys[-1] + (values - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return np.where(values < xs[0], before, np.where(values > xs[-1], after, np.interp(values, xs, ys)))
    return interpolate


def plot_comparison(runs: list[tuple[str, list[dict]]], path) -> None:
    """Several runs on one figure: val loss against tokens seen (what a run learned from how much
    text) and against seconds (how quickly), both log-scaled so a 256-token-per-step bigram and a
    2048-token-per-step GPT, seconds or hours long, share the axes. Train loss is faint, dashed."""
    if not runs:
        raise UserError("--compare needs at least one run.")
    for name, rows in runs:
        if not rows:
            raise UserError(f"run {name} has an empty loss curve: it stopped before its first report.")
        if not _evaluated(rows):
            raise UserError(f"run {name} has no validation loss after its first step to compare "
                            "(evaluations come every eval_interval steps).")
    if not matplotlib_available():
        raise UserError(f"--compare draws a picture and needs matplotlib: {PLOT_INSTALL}")
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    figure = Figure(figsize=(11, 4.2), dpi=120)
    by_tokens, by_seconds = figure.subplots(1, 2, sharey=True)
    for index, (name, rows) in enumerate(runs):
        colour = f"C{index % 10}"
        trained, evaluated = _trained(rows), _evaluated(rows)
        by_tokens.plot([row["tokens"] for row in trained], [row["train_loss"] for row in trained],
                       "--", color=colour, alpha=0.35, linewidth=1)
        label = f"{name} (val {evaluated[-1]['val_loss']:.4f})"
        for axes, x in ((by_tokens, "tokens"), (by_seconds, "seconds")):
            axes.plot([row[x] for row in evaluated], [row["val_loss"] for row in evaluated], "o-",
                      color=colour, markersize=3.5, label=label)
    by_tokens.set(xscale="log", xlabel="tokens seen (log)", ylabel="val loss (nats)",
                  title="val loss per token seen (dashed: train loss)")
    by_tokens.xaxis.set_major_formatter(EngFormatter(sep=""))
    by_seconds.set(xscale="log", xlabel="training seconds (log)", title="val loss per second of training")
    by_seconds.yaxis.set_tick_params(labelleft=True)
    by_seconds.grid(True, alpha=0.3)
    _finish(by_tokens)  # one legend: the colours are the same runs in both panels
    figure.suptitle(f"{len(runs)} runs compared (lower is better)")
    _save(figure, path)


def _trained(rows: list[dict]) -> list[dict]:
    """Rows after the first step: a log axis has no 0, so the evaluation before training (loss near
    ln(vocabulary size)) cannot be drawn there."""
    return [row for row in rows if row["tokens"] > 0 and row["seconds"] > 0]


def _evaluated(rows: list[dict]) -> list[dict]:
    return [row for row in _trained(rows) if row["val_loss"] is not None]


def _finish(axes) -> None:
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")


def _save(figure, path) -> None:
    """Render in memory, then write atomically: a reader never sees half a PNG."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    write_bytes_atomically(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# Comparing runs from their checkpoints (python model_handler.py A.pt B.pt --compare=runs.png)


def draw_runs(paths: list[str], png: str) -> list[str]:
    """The loss curves of one checkpoint (its own picture) or several (one chart to compare)."""
    runs = [(run_label(path, state), run_curve(path, state)) for path, state in
            ((path, load_checkpoint(path)) for path in paths)]
    if len(runs) == 1:
        if not plot_run(runs[0][1], png, runs[0][0]):
            raise UserError(f"no picture drawn: {missing_matplotlib_hint(paths[0])}")
    else:
        plot_comparison(runs, png)
    print(f"loss curves of {', '.join(label for label, _ in runs)} drawn in {png}")
    return [label for label, _ in runs]


def run_curve(path: str, state: dict) -> list[dict]:
    """The rows of a run's loss curve: kept in its checkpoint, or (older checkpoints) in NAME.csv."""
    if state.get("curve"):
        return state["curve"]
    csv_path = curve_paths(path)[0]
    if csv_path.is_file():
        return read_csv(csv_path, up_to_step=state["iter_num"])
    raise UserError(f"{path} has no loss curve (it was trained before curves were kept, and {csv_path} is missing).")


def run_label(path: str, state: dict) -> str:
    params = sum(t.numel() for t in state["model"].values())
    kind = state.get("model_kind", "gpt")
    attention = state["model_config"].get("attention") if kind == "gpt" else None
    what = f"{kind}, {attention} attention" if attention else kind
    return f"{Path(path).stem} ({what}, {params:,} parameters)"
