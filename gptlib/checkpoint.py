"""Checkpoint files: written atomically, read with `weights_only=True`, checked and upgraded.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so loading it never runs
pickled code. This module knows dicts, not models: building a model from one is ModelHandler's job.
"""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import torch

from gptlib.atomic_write import abandoned_temporaries, atomic_write
from gptlib.errors import UserError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "model_config", "train_config", "iter_num")
# and one of: "tokenizer" (tokenizer.py's state(): every checkpoint since tokenizers) or "vocab" (the
# list of characters: older checkpoints; character models still write it, for code that reads it)
TOKENIZER_KEYS = ("tokenizer", "vocab")


def save_checkpoint(state: dict, path: str) -> None:
    """Write atomically (see atomic_write.py): a crash or a full disk at any moment leaves either the
    old file or the new one, never half of one."""
    with atomic_write(path) as file:
        torch.save({"format_version": FORMAT_VERSION, **state}, file)
        if os.environ.get("GPT_TEST_SAVE_DELAY"):  # tests widen the window between write and rename
            time.sleep(float(os.environ["GPT_TEST_SAVE_DELAY"]))
    _remove_abandoned_temporaries(Path(path))


def _remove_abandoned_temporaries(target: Path, idle_seconds: float = 10.0) -> None:
    """A save killed before its rename leaves its temporary file behind; the next good save of the
    same checkpoint removes those no one has written to for a while."""
    cutoff = time.time() - idle_seconds
    for leftover in abandoned_temporaries(target):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:  # gone already, or not ours to remove
            pass


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read and check a checkpoint; anything wrong with the file becomes one clear UserError."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"checkpoint {path!r} does not exist. Checkpoints are written under models/ by training.")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, random bytes...
        raise UserError(
            f"{path} is not a readable checkpoint of this project: {_why_unreadable(file, err)}. "
            "Use a .pt file written by gpt_final_version.py or bigram.py."
        ) from None
    if (not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS)
            or not any(key in state for key in TOKENIZER_KEYS)):
        raise UserError(f"{path} is a PyTorch file but not a checkpoint of this project "
                        f"(it lacks {', '.join(REQUIRED_KEYS)} and a tokenizer or vocab).")
    return upgrade(state, path)


def load_weights(model, weights: dict, path: str = "checkpoint") -> None:
    """Copy saved weights into a model, or say exactly which tensors do not fit its shape."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    problems = [f"{n} is {found[n]} in the file but {expected[n]} in the model"
                for n in expected if n in found and found[n] != expected[n]]
    problems += [f"{n} is missing from the file" for n in expected if n not in found]
    problems += [f"{n} is in the file but not in the model" for n in found if n not in expected]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise UserError(f"{path}: the weights do not fit the model's config: {shown}.")
    model.load_state_dict(weights)


def upgrade(state: dict, path: str = "checkpoint") -> dict:
    """Bring an older checkpoint format up to FORMAT_VERSION, saying what was changed."""
    version = state.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise UserError(f"{path} has format version {version}, newer than this code's {FORMAT_VERSION}: update the project.")
    if version == 0:  # before versions were recorded, the kind and best loss were not stored
        state.setdefault("model_kind", "gpt")
        state.setdefault("best_val_loss", float("inf"))
        print(f"note: upgraded {path} from checkpoint format 0 to {FORMAT_VERSION}")
    state["format_version"] = FORMAT_VERSION
    return state


def _why_unreadable(file: Path, err: Exception) -> str:
    with open(file, "rb") as handle:
        head = handle.read(4)
    if not head:
        return "the file is empty"
    if head[:2] != b"PK":
        return "it is not a PyTorch file (no zip header)"
    if "weights_only" in str(err) or "Unsupported global" in str(err):
        return "it holds Python objects that are not loaded for safety (weights_only=True)"
    return "the file is damaged or truncated"


def best_path(out: str) -> str:
    """Where periodic saving keeps the best-val checkpoint: beside the latest, never over it."""
    return str(Path(out).with_suffix("")) + ".best.pt"


def default_checkpoint_path(name: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("models") / f"{name}-{stamp}.pt"
    n = 1
    while path.exists():  # never overwrite an earlier run's file
        n += 1
        path = Path("models") / f"{name}-{stamp}-{n}.pt"
    return str(path)
