"""How well a classifier labels held-out texts: accuracy, per-class precision, recall and F1, the
confusion matrix, as a table, a line and a picture (NAME.confusion.png, with matplotlib)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from gptlib import loss_curves
from gptlib.atomic_write import write_text_atomically


@torch.no_grad()
def predict_split(model, dataset, split: str, batch_size: int, device: str, autocast=None, limit: int | None = None):
    """Mean loss, true class ids and predicted class ids over `split`, in order, in eval mode."""
    was_training = model.training
    model.eval()
    total, count, truth, predicted = 0.0, 0, [], []
    for x, y in dataset.batches_in_order(split, batch_size, device, limit):
        if autocast is not None:
            with autocast:
                logits, loss = model(x, y)
        else:
            logits, loss = model(x, y)
        total += loss.float().item() * len(y)
        count += len(y)
        truth += y.tolist()
        predicted += logits.argmax(dim=-1).tolist()
    model.train(was_training)
    return total / max(count, 1), truth, predicted


def metrics(labels: list[str], truth: list[int], predicted: list[int]) -> dict:
    """Accuracy, each class's precision (of the texts given this label, the share that had it),
    recall (of the texts that had it, the share found) and F1 (their harmonic mean), their
    unweighted mean (macro F1: every class counts the same, however rare), and the confusion
    matrix: row = the true label, column = the label given."""
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(truth, predicted):
        confusion[t][p] += 1
    per_class = {}
    for i, label in enumerate(labels):
        hits, given, had = confusion[i][i], sum(row[i] for row in confusion), sum(confusion[i])
        precision = hits / given if given else 0.0
        recall = hits / had if had else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": had}
    accuracy = sum(confusion[i][i] for i in range(k)) / max(1, len(truth))
    majority = max(sum(row) for row in confusion) / max(1, len(truth))
    return {"accuracy": accuracy, "macro_f1": sum(c["f1"] for c in per_class.values()) / k,
            "majority_baseline": majority, "per_class": per_class, "confusion": confusion, "labels": labels,
            "examples": len(truth)}


def table(m: dict) -> str:
    """The per-class numbers and the confusion matrix, as text for the terminal."""
    width = max(8, *(len(label) for label in m["labels"]))
    lines = [f"{'label':{width}}  precision  recall     f1  support"]
    for label, c in m["per_class"].items():
        lines.append(f"{label:{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:5.3f}  {c['support']:7d}")
    lines.append(f"accuracy {m['accuracy']:.3f} on {m['examples']} texts (always guessing the commonest label: "
                 f"{m['majority_baseline']:.3f}); macro F1 {m['macro_f1']:.3f}")
    lines.append("confusion (rows: the true label, columns: the label given):")
    lines.append(" " * width + "  " + " ".join(f"{label[:8]:>8}" for label in m["labels"]))
    for label, row in zip(m["labels"], m["confusion"]):
        lines.append(f"{label:{width}}  " + " ".join(f"{n:8d}" for n in row))
    return "\n".join(lines)


def summary(m: dict) -> str:
    """The numbers for the final line: test_accuracy=0.917 test_macro_f1=0.915 per_class=a:P/R/F1,..."""
    per_class = ",".join(f"{label}:{c['precision']:.2f}/{c['recall']:.2f}/{c['f1']:.2f}" for label, c in m["per_class"].items())
    confusion = "/".join(",".join(map(str, row)) for row in m["confusion"])
    return (f"test_accuracy={m['accuracy']:.4f} test_macro_f1={m['macro_f1']:.4f} "
            f"per_class(P/R/F1)={per_class} confusion={confusion}")


def metrics_paths(checkpoint) -> tuple[Path, Path]:
    """NAME.test.json and NAME.confusion.png beside NAME.pt."""
    stem = Path(checkpoint).with_suffix("")
    return Path(f"{stem}.test.json"), Path(f"{stem}.confusion.png")


def write_metrics(m: dict, checkpoint) -> str:
    """The numbers in NAME.test.json and, with matplotlib, the picture; what was written, to say."""
    json_path, png_path = metrics_paths(checkpoint)
    write_text_atomically(json_path, json.dumps(m, indent=1) + "\n")
    if not plot_metrics(m, png_path, f"{Path(checkpoint).stem}: held-out test split"):
        return f"test metrics: {json_path}; {loss_curves.missing_matplotlib_hint(checkpoint)}"
    return f"test metrics: {json_path}, picture {png_path}"


def plot_metrics(m: dict, path, title: str) -> bool:
    """The confusion matrix (counts, shaded by share of the row) beside per-class precision, recall
    and F1 bars; False where matplotlib is not installed."""
    if not loss_curves.matplotlib_available():
        return False
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in any thread (as loss_curves)

    labels, confusion = m["labels"], m["confusion"]
    shares = [[n / max(1, sum(row)) for n in row] for row in confusion]
    figure = Figure(figsize=(11, 4.5), dpi=110)
    left, right = figure.subplots(1, 2)
    left.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(confusion):
        for j, n in enumerate(row):
            left.text(j, i, str(n), ha="center", va="center", color="white" if shares[i][j] > 0.5 else "black")
    left.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    left.set_yticks(range(len(labels)), labels)
    left.set_xlabel("label given")
    left.set_ylabel("true label")
    left.set_title(f"accuracy {m['accuracy']:.3f} on {m['examples']} texts")
    width = 0.27
    for k, name in enumerate(("precision", "recall", "f1")):
        right.bar([i + (k - 1) * width for i in range(len(labels))], [m["per_class"][label][name] for label in labels],
                  width, label=name)
    right.axhline(m["majority_baseline"], color="grey", linestyle=":", label="commonest label's share")
    right.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    right.set_ylim(0, 1.3)  # room above the bars for the legend
    right.legend(loc="upper center", ncol=2, fontsize="small")
    right.set_title(f"macro F1 {m['macro_f1']:.3f}")
    figure.suptitle(title)
    loss_curves._save(figure, path)
    return True
