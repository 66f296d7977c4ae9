"""One builder of models: from a shape and where its weights come from, for training and for
ModelHandler alike (weights, vocabulary growth, attention switch, LoRA adapters).

    model, state = build_for_run(GPT, model_cfg, cfg, start)          # training (gptlib.train)
    model, vocab, state = model_from_checkpoint(path, state)          # sampling (model_handler.py)

Sections: reading weights · the model a run trains · a checkpoint's model · LoRA · vocabulary rows.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from config import GPTConfig, TrainConfig
from gptlib import lora, optimizers, pretrained, tokenizer
from gptlib.checkpoint import load_checkpoint, load_weights
from gptlib.cli import apply
from gptlib.errors import UserError

MARKER_ROW_SEED = 1234  # the markers' rows are a fixed function of the base (see extend_vocab_rows)


def count_parameters(model, trainable_only: bool = False) -> int:
    """The parameters of a model (those that train, with trainable_only): the one count every report uses."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ==============================================================================================
# Reading weights: a checkpoint of ours, or GPT-2's from a hub directory or name


def read_weights(source: str, overrides: dict) -> dict:
    """What --init_from names, as a checkpoint-like dict: a checkpoint of this project, or GPT-2's
    weights from a hub directory or name (its shape from config.json; --block_size may shrink it)."""
    if pretrained.is_pretrained_source(source):
        return pretrained.load_pretrained(source, overrides.get("block_size", 0), overrides.get("dropout", 0.0))
    if not Path(source).exists():
        raise UserError(f"--init_from={source} does not exist: give a checkpoint (.pt), a hub directory "
                        f"(config.json + weights) or one of {', '.join(pretrained.HUB_NAMES)}.")
    state = load_checkpoint(source)
    if "lora" in state:
        raise UserError(f"{source} holds LoRA adapters, not a whole model: start from a merged copy "
                        f"(python model_handler.py {source} --export=merged.pt).")
    return state


def base_reference(source: str) -> str:
    """How a LoRA checkpoint names its base: a hub name as it is, a path made absolute, so resuming
    and sampling find it from any directory."""
    return source if source in pretrained.HUB_NAMES and not Path(source).exists() else str(Path(source).resolve())



# ==============================================================================================
# The model a run trains: fresh, resumed, or from trained weights; LoRA adapters on any of them


def build_for_run(model_class, model_cfg: GPTConfig, cfg: TrainConfig, start, convert_weights=None):
    """The model a run starts from (`start` is gptlib.start.Start), with its weights; returns it and
    the resumed state (converted to the model's attention class when that changed). A LoRA run gets
    its adapters, and everything else frozen, here: before the optimizer or DDP see the parameters."""
    torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights (and adapters)
    model = model_class(model_cfg)
    state = start.resumed_state
    if state and "lora" in state:
        saved = (state["lora"]["rank"], state["lora"]["alpha"])
        if (cfg.lora_rank, cfg.lora_alpha) != saved:
            raise UserError(f"{start.path} trained LoRA adapters of rank {saved[0]}, alpha {saved[1]:g}; "
                            "a resumed run keeps them: drop --lora_rank / --lora_alpha.")
        targets = state["lora"].get("targets", list(lora.PAPER_TARGETS))
        if "lora_targets" in state["train_config"] and list(lora.target_layers(cfg.lora_targets)) != targets:
            raise UserError(f"{start.path} trained LoRA adapters on {', '.join(targets)}; a resumed run keeps them: "
                            "drop --lora_targets.")
        assemble_lora(model, state, start.path)
        return model, state
    if state:
        if cfg.lora_rank:
            raise UserError(f"{start.path} trained every weight; --lora_rank applies to a new run from it "
                            f"(--init_from={start.path} --lora_rank={cfg.lora_rank}).")
        state = switch_attention(state, model_cfg, model_class, convert_weights)
        load_weights(model, state["model"], start.path)
    elif start.initial_weights:
        _load_initial_weights(model, model_class, model_cfg, cfg, start, convert_weights)
    return model, state


def _load_initial_weights(model, model_class, model_cfg, cfg, start, convert_weights) -> None:
    """Trained weights (--init_from) into a new run's model, its vocabulary grown to the data's."""
    init_state = switch_attention(start.initial_weights, model_cfg, model_class, convert_weights)
    grown = model_cfg.vocab_size != init_state["model_config"]["vocab_size"]
    if cfg.lora_rank and grown and cfg.tokenizer == "char":
        raise UserError(f"the data has characters that {start.path}'s vocabulary lacks; LoRA trains adapters "
                        "only and cannot learn new embedding rows: fine-tune without --lora_rank.")
    weights = init_state["model"]
    if grown and cfg.tokenizer != "char":  # the chat markers' special ids, appended (with_chat_markers)
        weights = extend_vocab_rows(weights, model_cfg.vocab_size)
    load_weights_extending_vocab(model, weights, start.path)
    if cfg.lora_rank:  # the appended marker rows learn beside the adapters (lora.TrainedRows)
        rows_from = init_state["model_config"]["vocab_size"] if grown and cfg.tokenizer != "char" else None
        add_lora(model, model_cfg, cfg.lora_rank, cfg.lora_alpha, rows_from, lora.target_layers(cfg.lora_targets))


# ==============================================================================================
# A checkpoint's model, for sampling, serving and exporting (ModelHandler)


def model_from_checkpoint(path: str, state: dict, attention: str = ""):
    """The model a checkpoint (or hub weights, as pretrained.load_pretrained reads them) was trained
    as, with its tokenizer; LoRA adapters are merged into their base, so sampling costs what it costs
    without them. Returns (model, vocab, state); `state` is what saving the model should write."""
    from bigram import BigramLanguageModel
    from gpt_final_version import GPT, convert_attention_weights

    kinds = {"gpt": GPT, "bigram": BigramLanguageModel}
    kind = state.get("model_kind", "gpt")
    if kind == "classifier":  # gptlib/classify.py's: it labels texts, it does not write them
        raise UserError(f"{path} is a classifier: python model_handler.py {path} --classify=TEXT, or serve it with "
                        f"python serve.py LANGUAGE_MODEL.pt --classifier={path}.")
    if kind not in kinds:
        raise UserError(f"{path} holds an unknown model kind {kind!r}; known: {', '.join(kinds)}.")
    config = apply(GPTConfig(), state["model_config"])
    if "pretrained" in state:  # GPT-2's weights; its tokenizer from the files beside them, if any
        model = GPT(config)
        load_weights(model, state["model"], path)
        return model, pretrained.hub_tokenizer(state), state
    if "lora" in state:
        model = GPT(config)
        assemble_lora(model, state, path)
        lora.merge_adapters(model)
        model.requires_grad_(True)  # merged: an ordinary model again, every weight its own
        # from here on a plain checkpoint: merged weights, no adapters, no adapter optimizer state
        state = {k: v for k, v in state.items() if k not in ("lora", "optimizer", "rng")}
        state["train_config"] = {**state["train_config"], "lora_rank": 0}
        return model, tokenizer.from_checkpoint(state), state
    if attention and kind == "gpt" and attention != config.attention:
        config = dataclasses.replace(config, attention=attention)
        config.validate()
        state = switch_attention(state, config, GPT, convert_attention_weights)
    model = kinds[kind](config)
    load_weights(model, state["model"], path)
    return model, tokenizer.from_checkpoint(state), state


def switch_attention(state: dict, model_cfg: GPTConfig, build_model, convert_weights) -> dict:
    """A checkpoint of one attention class made ready for the other (--attention=fast on a
    checkpoint trained with heads, or back): weights and Adam's moments are converted, so resuming
    continues the same run. A checkpoint already in model_cfg's class is returned as it is."""
    saved = state["model_config"].get("attention", "fast")
    if convert_weights is None or saved == model_cfg.attention:
        return state
    state = dict(state)
    convert = lambda tensors: convert_weights(tensors, model_cfg, model_cfg.attention)
    state["model"] = convert(state["model"])
    if state.get("train_config", {}).get("optimizer") == "muon":  # Muon orthogonalizes each matrix
        state.pop("optimizer", None)  # as it is; the other layout's matrices are other matrices
    if "optimizer" in state:
        with torch.device("meta"):  # shapes and names only: no memory, no initialisation cost
            old_groups = optimizers.decay_groups(build_model(dataclasses.replace(model_cfg, attention=saved)).named_parameters())
            new_groups = optimizers.decay_groups(build_model(model_cfg).named_parameters())
        state["optimizer"] = optimizers.convert_optimizer_state(state["optimizer"], old_groups, new_groups, convert)
    state["model_config"] = {**state["model_config"], "attention": model_cfg.attention}
    print(f"note: converted the checkpoint's attention from {saved!r} to {model_cfg.attention!r} (the same function)")
    return state




# ==============================================================================================
# LoRA: adapters over a frozen base, and the base a LoRA checkpoint names


def assemble_lora(model, state: dict, path: str) -> None:
    """A LoRA checkpoint's model: its base's weights, the adapters added, then the trained ones loaded."""
    reference = state["lora"]
    load_weights(model, load_lora_base(state, path)["model"], reference["base"])
    add_lora(model, model.config, reference["rank"], reference["alpha"], reference.get("rows_from"),
             tuple(reference.get("targets", lora.PAPER_TARGETS)))
    load_weights(model, {**lora.base_weights(model), **state["model"]}, path)


def add_lora(model, model_cfg: GPTConfig, rank: int, alpha: float, rows_from: int | None,
             targets: tuple[str, ...]) -> None:
    if model_cfg.attention != "fast":
        raise UserError("LoRA adapts the fused attention's qkv and proj layers: use --attention=fast "
                        "(the per-Head model converts to it with the same function).")
    if not lora.add_adapters(model, rank, alpha, rows_from, targets):
        raise UserError(f"--lora_targets={','.join(targets)} names no layer of this model (ffwd.gate is SwiGLU's only).")
    lora.freeze_all_but_adapters(model)


def load_lora_base(state: dict, path: str) -> dict:
    """The base model a LoRA checkpoint's adapters were trained on, found where the run found it
    and checked against the fingerprint saved with them."""
    reference = state["lora"]
    base = reference["base"]
    if base not in pretrained.HUB_NAMES and not Path(base).exists():
        raise UserError(f"{path} holds LoRA adapters for the base model {base}, which is not there any more "
                        "(moved or deleted?): put it back at that path, or export a merged copy where it is.")
    config = reference["model_config"]
    base_state = read_weights(base, {"block_size": config["block_size"], "dropout": config["dropout"]})
    if config["vocab_size"] > base_state["model_config"]["vocab_size"]:  # the chat markers' rows, rebuilt
        base_state = {**base_state, "model": extend_vocab_rows(base_state["model"], config["vocab_size"])}
    if not lora.same_fingerprint(lora.fingerprint(base_state["model"]), reference["base_fingerprint"]):
        raise UserError(f"{base} is not the base model {path}'s adapters were trained on (its weights differ).")
    return base_state


def lora_reference(model, model_cfg: GPTConfig, cfg: TrainConfig) -> dict:
    """What a LoRA checkpoint keeps besides its adapters, to rebuild base + adapters later."""
    return {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": list(lora.target_layers(cfg.lora_targets)), "base": cfg.init_from,
            "rows_from": lora.trained_rows_from(model),
            "base_fingerprint": lora.fingerprint(lora.base_weights(model)),
            "model_config": dataclasses.asdict(model_cfg)}



# ==============================================================================================
# Vocabulary rows: a model started from trained weights may know more tokens than they do


def extend_vocab_rows(weights: dict, vocab_size: int) -> dict:
    """Weights with the vocabulary-sized tensors (token embedding, output layer, tied or not)
    grown to vocab_size rows for special ids appended at the end (the chat markers).

    A new row is the mean of the trained rows plus a small fixed offset: the mean keeps the new
    token's output logit ordinary at the start (a fresh random row would be far from where the
    trained ones live), the offset keeps the three markers apart as inputs. The starting rows are
    a fixed function of the base, so a LoRA checkpoint rebuilds them from its base (fingerprint
    included) and keeps only what its lora_rows learned (lora.TrainedRows)."""
    grown = {}
    for name, tensor in weights.items():
        is_vocab = name.endswith(("token_embedding.weight", "lm_head.weight", "lm_head.bias"))
        if not is_vocab or tensor.shape[0] >= vocab_size:
            grown[name] = tensor
            continue
        extra = vocab_size - tensor.shape[0]
        mean = tensor.float().mean(dim=0, keepdim=True)
        scale = tensor.float().std().item() * 0.1
        generator = torch.Generator().manual_seed(MARKER_ROW_SEED)  # per tensor: tied copies stay equal
        offset = torch.randn((extra, *tensor.shape[1:]), generator=generator) * scale
        grown[name] = torch.cat([tensor, (mean + offset).to(tensor.dtype)])
    return grown


def load_weights_extending_vocab(model, weights: dict, path: str) -> None:
    """Load trained weights into a model whose vocabulary grew: the rows of known characters (token
    embedding, output layer) keep their trained values; rows of new characters keep their fresh
    initialisation. Every other tensor must match exactly (load_weights says which do not)."""
    merged = {}
    for name, fresh in model.state_dict().items():
        old = weights.get(name)
        grown = (old is not None and old.dim() == fresh.dim() and old.shape[1:] == fresh.shape[1:]
                 and old.shape[0] < fresh.shape[0])
        if grown:
            row_mix = fresh.clone()
            row_mix[:old.shape[0]] = old
            merged[name] = row_mix
        elif old is not None:
            merged[name] = old
    load_weights(model, merged, path)

