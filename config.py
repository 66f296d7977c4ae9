"""Hyperparameters and presets, as data: the dataclasses every command reads its options from.

Edit the defaults below, or override any field from the command line:

    python gpt_final_version.py --preset=cpu --max_iters=2000 --n_layer=4
    python gpt_final_version.py --help        # every option with its default

Values are applied in this order: the dataclass defaults, then the preset (chosen from the device
unless --preset names one), then a checkpoint being resumed, then the command line.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from gptlib.errors import UserError

# ----------------------------------------------------------------------------------------------
# The model's shape


@dataclass
class GPTConfig:
    vocab_size: int = 65  # tokens the model knows; set from the data (65 characters of tiny-shakespeare, GPT-2's 50257), except with --tokenizer=bpe, where it is the size BPE is trained to
    block_size: int = 256  # context length in characters; 256 holds a few lines of verse
    n_embd: int = 384  # width of the residual stream; 384 = 6 heads x 64, the lecture's size
    n_head: int = 6  # attention heads; each sees n_embd / n_head = 64 dimensions
    n_layer: int = 6  # transformer blocks; 6 is the lecture's depth
    dropout: float = 0.2  # a 10M-parameter model overfits 1M characters, so regularise
    bias: bool = True  # biases in the linear layers and LayerNorms, as in the lecture
    attention: str = "fast"  # "fast": one QKV matmul + fused kernel; "heads": the lecture's per-Head loop
    position: str = "learned"  # "learned": a vector per position (lecture); "rope": rotary, lets the KV cache roll
    activation: str = "relu"  # feed-forward non-linearity: "relu" (lecture), "gelu", "gelu_tanh" (GPT-2's approximation) or "relu2" (ReLU squared)
    # Three switches that only GPT-2's published weights need (pretrained.py sets them from config.json);
    # the defaults are this project's own models, so every earlier checkpoint loads unchanged.
    qkv_bias: bool = False  # biases on the query/key/value projections: GPT-2 has them, the lecture's Heads do not
    lm_head_bias: bool = True  # a bias on the output layer: ours has one, GPT-2 has none (its output layer is the embedding)
    tie_embeddings: bool = False  # the output layer reuses the token embedding matrix (GPT-2): fewer parameters, one vocabulary table
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before they meet (modded-nanogpt): bounded attention logits
    # What turns GPT-2 into a Llama (SmolLM2, Qwen2.5, Qwen3, Llama 3.2: docs/gpt2-to-llama.md). The
    # hub loader sets them from config.json; the defaults leave this project's models as they were.
    norm: str = "layernorm"  # "layernorm" (the lecture's, GPT-2's) or "rmsnorm": scale by the root mean square only, no mean, no bias (Llama)
    norm_eps: float = 1e-5  # added under the norms' square root; PyTorch's LayerNorm default, SmolLM2's 1e-5, Qwen's 1e-6
    n_kv_head: int = 0  # grouped-query attention: heads of keys and values, each shared by n_head / n_kv_head query heads (a smaller KV cache); 0: n_head
    head_dim: int = 0  # each head's size; 0: n_embd / n_head. Qwen3 makes it larger than that (its queries are n_head x head_dim wide)
    ffn_hidden: int = 0  # width inside the feed-forward; 0: 4 x n_embd. SwiGLU models use about 8/3 x n_embd (its three matrices cost what ReLU's two do at 4x)
    rope_theta: float = 10000.0  # rotary base: pair i turns by pos / rope_theta^(2i/hs); long-context models raise it (SmolLM2 1e5, Qwen 1e6)
    rope_scaling_factor: float = 0.0  # Llama 3's frequency scaling (Llama 3.2): slow pairs turn this many times slower, fast ones unchanged; 0: off
    rope_low_freq_factor: float = 1.0  # with rope_scaling_factor: wavelengths above original_context / this are fully scaled
    rope_high_freq_factor: float = 4.0  # with rope_scaling_factor: wavelengths below original_context / this are left alone; between, a blend
    rope_original_context: int = 8192  # with rope_scaling_factor: the context the model was first trained at
    qk_norm_gain: bool = False  # with qk_norm: a learned gain per dimension in the query and key norms (Qwen3), with norm_eps

    @property
    def head_size(self) -> int:
        """Dimensions per head: head_dim if set, else n_embd / n_head."""
        return self.head_dim or self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Heads of keys and values (what the KV cache holds): n_kv_head if set, else n_head."""
        return self.n_kv_head or self.n_head

    def validate(self) -> None:
        if self.n_embd % self.n_head != 0 and not self.head_dim:
            raise UserError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: each head gets "
                f"n_embd / n_head dimensions. Try --n_head={_nearest_divisor(self.n_embd, self.n_head)} "
                f"or --n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}."
            )
        _check_choice("attention", self.attention, ("fast", "heads"))
        _check_choice("activation", self.activation, ("relu", "gelu", "gelu_tanh", "relu2", "swiglu"))
        _check_choice("position", self.position, ("learned", "rope"))
        _check_choice("norm", self.norm, ("layernorm", "rmsnorm"))
        if self.position == "rope" and self.head_size % 2:
            raise UserError(f"rotary positions need an even head size; the head size is {self.head_size}.")
        for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("n_kv_head", "head_dim", "ffn_hidden", "rope_scaling_factor"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative (0 means the default), got {getattr(self, name)}.")
        if self.n_head % self.kv_heads:
            raise UserError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}: each key/value "
                            f"head serves the same number of query heads. Try --n_kv_head={_nearest_divisor(self.n_head, self.kv_heads)}.")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise UserError(f"rope_theta and norm_eps must be positive, got {self.rope_theta} and {self.norm_eps}.")
        llama_attention = self.kv_heads != self.n_head or self.head_size * self.n_head != self.n_embd or self.qk_norm_gain
        if self.attention == "heads" and llama_attention:
            raise UserError("the lecture's per-Head attention keeps one key and value per query head of n_embd / n_head "
                            "dimensions, without learned q/k norms: use --attention=fast with n_kv_head, head_dim or qk_norm_gain.")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}.")


# ----------------------------------------------------------------------------------------------
# How to train it


@dataclass
class TrainConfig:
    batch_size: int = 64  # sequences per step (per process under torchrun)
    max_iters: int = 5000  # optimizer steps in total; with --resume, the step to stop at
    max_minutes: float = 0.0  # instead of max_iters: train for this wall-clock time (schedule laid over it, final evaluation and save inside it); 0: off
    learning_rate: float = 1e-3  # peak rate; small models tolerate 1e-3 with warm-up and clipping
    min_lr: float = 1e-4  # the cosine schedule ends here, a tenth of the peak
    warmup_iters: int = 100  # linear warm-up steps; keeps Adam's first noisy steps small
    schedule: str = "cosine"  # after warm-up: "cosine" decays to min_lr over the whole run (nanoGPT's); "wsd" stays at the peak, then decays linearly to min_lr over the last decay_fraction
    decay_fraction: float = 0.2  # with --schedule=wsd: the share of the run spent decaying
    optimizer: str = "adamw"  # "adamw" for every weight (nanoGPT's); "muon": Muon for the blocks' matrices, AdamW for the rest (muon.py)
    muon_lr: float = 0.02  # with --optimizer=muon: the matrices' peak rate; the schedule moves it in step with learning_rate
    muon_momentum: float = 0.95  # with --optimizer=muon: the matrices' Nesterov momentum
    muon_weight_decay: float = 0.0  # with --optimizer=muon: the matrices' decoupled decay, times their rate each step (Muon's rate is 10x AdamW's, so 0.01 here pulls as hard as weight_decay=0.1)
    lr_decay_iters: int = 0  # cosine decay length; 0 means max_iters. Set it to resume a run exactly
    weight_decay: float = 0.1  # AdamW decay, applied to 2-D weights only (not biases, norms)
    beta1: float = 0.9  # Adam momentum
    beta2: float = 0.99  # a bit below 0.999 because each step sees few tokens
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 disables
    gradient_accumulation_steps: int = 1  # micro-batches per step: a large batch on a small device
    eval_interval: int = 500  # estimate train/val loss every this many steps
    eval_iters: int = 200  # batches per split in each estimate; more is steadier and slower
    log_interval: int = 0  # a row of the loss curve (NAME.csv beside the checkpoint) every this many steps; 0: about 100 rows
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu; or name one ("cpu", "cuda:1")
    dtype: str = "auto"  # "auto": bfloat16 autocast on cuda, float32 elsewhere; or float32/bfloat16/float16
    compile: bool = False  # torch.compile the model; pays off on cuda for long runs
    seed: int = 1337  # seeds batches, dropout and the final sample
    tokenizer: str = "char"  # "char": one token per character (the lecture's; small, readable); "bpe": byte-level BPE trained on the text to --vocab_size (default 512); "gpt2": GPT-2's 50,257 tokens
    tokenizer_dir: str = "data/gpt2"  # with --tokenizer=gpt2: the folder holding encoder.json + vocab.bpe, vocab.json + merges.txt, or tokenizer.json
    data: str = "data/tinyshakespeare/input.txt"  # training text (UTF-8; downloaded if the default is missing), or chat pairs (.jsonl)
    out: str = ""  # checkpoint path; empty means models/<preset>-<date>-<time>.pt (never overwrites)
    memmap: bool = False  # prepare the text once into DATA.bin and read it through a memory map (corpora larger than memory); automatic above 256 MB
    min_char_count: int = 1  # with memmap: characters seen fewer times become the unknown character '\ufffd' (bounds a large corpus's vocabulary)
    resume: str = ""  # checkpoint to continue training from
    init_from: str = ""  # start a new run from trained weights: a checkpoint (new characters extend its vocabulary), a hub directory (config.json + weights) or gpt2, gpt2-medium, gpt2-large, gpt2-xl
    lora_rank: int = 0  # with --init_from: train only rank-r LoRA adapters on the --lora_targets layers (lora.py), the rest frozen; 0: train every weight
    fsdp: bool = False  # under torchrun: shard weights, gradients and optimizer state across the processes (PyTorch's fully_shard, sharding.py) for models that do not fit one device; off: DistributedDataParallel (each process holds everything)
    lora_targets: str = "attn,mlp"  # with --lora_rank: the layers that get adapters: attn (qkv, proj), mlp (up, gate, proj), or single layers such as attn.qkv,ffwd.up
    lora_alpha: float = 16.0  # LoRA's update is scaled by lora_alpha / lora_rank, so a learning rate that works at one rank works at others
    save_interval: int = 0  # save every this many steps, and the best-val model to NAME.best.pt; 0: at the end only
    notes: str = "notes.txt"  # one line per finished run is appended here; empty disables
    samples_dir: str = "samples"  # where the end-of-run sample goes; empty disables
    sample_chars: int = 500  # length of the end-of-run sample, in tokens (characters for a character model)
    log_text: bool = False  # on chat pairs, print and save the end-of-run sample (a held-out message of yours and the reply); off: only its length, as both may repeat your messages
    report_contexts: int = 32  # after a run on chat pairs: the report beside the checkpoint (NAME.report.md/.json, NAME.blind.html; gptlib/persona_report.py) answers this many held-out conversations; 0: no report
    context_turns: int = 6  # on chat pairs with a "context" (chat_data.py): each reply sees up to this many earlier turns of its conversation (their message is one, each earlier exchange two); 1: the single exchange, their last turn only; 0: the whole session
    persona: str = ""  # whose voice a chat model speaks in (the system prompt of a chat template; the report's name); empty: the first name in the pairs' "me"
    progress: bool = True  # show the tqdm bar (it is hidden anyway when stderr is not a terminal)
    task: str = "lm"  # "lm": learn the next token of --data; "classify": learn to label texts (--data=labels.csv, a head on the GPT: docs/classify.md; its options: --task=classify --help)

    def validate(self) -> None:
        for name in ("batch_size", "eval_iters", "gradient_accumulation_steps", "eval_interval", "min_char_count"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.context_turns < 0:
            raise UserError(f"context_turns must not be negative (1: the single exchange, 0: the whole session), got {self.context_turns}.")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "save_interval", "sample_chars", "log_interval", "lora_rank",
                     "report_contexts"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise UserError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.max_minutes < 0:
            raise UserError(f"max_minutes must not be negative, got {self.max_minutes}.")
        _check_choice("dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        if self.lora_rank and not self.init_from:
            raise UserError("--lora_rank adapts a trained model: give it with --init_from=CHECKPOINT, DIR or gpt2.")
        if self.fsdp and self.optimizer == "muon":
            raise UserError("--fsdp splits each matrix across the processes, and Muon orthogonalises whole matrices: "
                            "add --optimizer=adamw.")
        if self.fsdp and self.lora_rank:
            raise UserError("--fsdp is for training every weight; LoRA's adapters are small and its frozen base needs "
                            "no optimizer state: drop --fsdp (DistributedDataParallel) or --lora_rank.")
        if self.lora_alpha <= 0:
            raise UserError(f"lora_alpha must be positive, got {self.lora_alpha}.")
        _check_choice("tokenizer", self.tokenizer, ("char", "bpe", "gpt2"))
        _check_choice("task", self.task, ("lm", "classify"))
        _check_choice("schedule", self.schedule, ("cosine", "wsd"))
        _check_choice("optimizer", self.optimizer, ("adamw", "muon"))
        if not 0.0 < self.decay_fraction <= 1.0:
            raise UserError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}.")
        if self.muon_weight_decay < 0:
            raise UserError(f"muon_weight_decay must not be negative, got {self.muon_weight_decay}.")
        if self.muon_lr <= 0 or not 0.0 <= self.muon_momentum < 1.0:
            raise UserError(f"muon_lr must be positive and muon_momentum in [0, 1); got {self.muon_lr}, {self.muon_momentum}.")


@dataclass
class ClassifyConfig:
    """What --task=classify adds (gptlib/classify.py): where the labels are, the head, what trains."""
    columns: str = ""  # which field holds what, as text=COLUMN,label=COLUMN (CSV header or JSONL key); empty: text and label
    pooling: str = "mean"  # how the head reads the text: "mean": the mean of the real tokens' hidden states (as good or better on our character models, docs/classify.md); "last": the last real token's, the only one that has seen every token
    trainable: str = "all"  # what learns besides the head: "head" (the GPT frozen), "last" (the last --last_blocks blocks and the final norm), "all"; --lora_rank trains LoRA adapters instead
    last_blocks: int = 1  # with --trainable=last: how many of the last blocks learn (LLMs-from-scratch trains one)
    val_fraction: float = 0.1  # share of each class held out for validation (the loss curve, the best model)
    test_fraction: float = 0.1  # share of each class held out for the final accuracy, F1 and confusion matrix (never trained or selected on)

    def validate(self, n_layer: int | None = None) -> None:
        _check_choice("pooling", self.pooling, ("last", "mean"))
        _check_choice("trainable", self.trainable, ("head", "last", "all"))
        if self.last_blocks < 1 or (n_layer is not None and self.last_blocks > n_layer):
            raise UserError(f"last_blocks must be between 1 and the model's {n_layer or 'n_layer'} blocks, got {self.last_blocks}.")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise UserError(f"val_fraction and test_fraction must be above 0 and add up to less than 1, got "
                            f"{self.val_fraction} and {self.test_fraction}.")


@dataclass
class SampleConfig:
    prompt: str = "\n"  # text the samples start with; its characters must be in the vocabulary
    max_new_tokens: int = 500  # tokens to generate after the prompt (characters for a character model)
    temperature: float = 0.8  # below 1 sharpens the distribution, above 1 flattens it; 0 is greedy
    top_k: int = 0  # sample only among the k likeliest characters; 0 means all
    num_samples: int = 1  # independent samples to draw
    seed: int = 1337  # the same seed gives the same samples
    device: str = "auto"  # as for training
    out: str = ""  # also write the samples to this file (e.g. samples/romeo.txt)
    use_cache: bool = True  # keep keys/values between steps (same text, much faster)
    dtype: str = "auto"  # weights for generating: "auto" is float32 (uncompiled decoding is fastest in it); or bfloat16; or int8 (CPU: linear layers in int8, 1.7-2x transformers' decoding for the 135M-500M hub models, 3x compiled; approximate: gptlib/quantize.py)
    chat: bool = False  # talk to a model trained on chat pairs: type a message, it answers until its end marker

    def validate(self) -> None:
        if self.max_new_tokens < 0:
            raise UserError(f"max_new_tokens must not be negative, got {self.max_new_tokens}.")
        if self.num_samples < 1:
            raise UserError(f"num_samples must be at least 1, got {self.num_samples}.")
        if self.temperature < 0:
            raise UserError(f"temperature must not be negative, got {self.temperature}.")
        if self.top_k < 0:
            raise UserError(f"top_k must not be negative, got {self.top_k}.")
        _check_choice("dtype", self.dtype, ("auto", "float32", "bfloat16", "int8"))


# ----------------------------------------------------------------------------------------------
# Presets: named sets of overrides. The training entry points pick "gpu" on cuda and "cpu"
# elsewhere unless --preset says otherwise; --preset=none keeps the dataclass defaults above.

PRESETS: dict[str, tuple[str, dict]] = {
    "gpu": (
        "the lecture / nanoGPT shakespeare_char shape: 6 layers x 384, context 256, batch 64, 5000 steps",
        dict(position="rope", activation="relu2", compile=True),
    ),
    "lecture": (
        "the lecture's gpt.py: per-Head attention, learned positions, ReLU, dropout 0.2, 6 x 384, "
        "context 256, batch 64, lr 3e-4 constant, 5000 steps (hours on a CPU: a GPU's model)",
        dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, attention="heads",
             position="learned", activation="relu", batch_size=64, max_iters=5000, learning_rate=3e-4,
             min_lr=3e-4, warmup_iters=0, weight_decay=0.01, beta2=0.999, grad_clip=0.0,
             eval_interval=500, eval_iters=200),
    ),
    "cpu": (
        "laptop CPU or mps: 4 layers x 192, context 128, batch 16, 3500 steps, QK-norm, Muon with weight decay for the matrices, ~14 minutes on 2 cores",
        dict(n_layer=4, n_head=4, n_embd=192, block_size=128, dropout=0.0, position="rope",
             activation="relu2", qk_norm=True, batch_size=16, max_iters=3500, learning_rate=2e-3, min_lr=2e-4,
             warmup_iters=50, eval_interval=500, eval_iters=20, optimizer="muon", muon_weight_decay=0.1),
    ),
    "quick": (
        "nanoGPT's CPU-recipe quality (val ~1.89) in about a minute on 2 cores: 4 x 128, context 64",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, position="rope",
             activation="relu2", batch_size=32, max_iters=350, learning_rate=3e-3, min_lr=3e-4,
             warmup_iters=30, eval_interval=350, eval_iters=20),
    ),
    "nanogpt-cpu": (
        "nanoGPT's README CPU recipe (4 layers x 128, context 64, batch 12, 2000 steps), for comparison",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=12,
             max_iters=2000, learning_rate=1e-3, lr_decay_iters=2000, eval_interval=250,
             eval_iters=20),
    ),
    "tiny": (
        "a toy model for smoke tests: 2 layers x 32, context 32, 100 steps, seconds on any machine",
        dict(n_layer=2, n_head=2, n_embd=32, block_size=32, dropout=0.0, batch_size=16,
             max_iters=100, learning_rate=3e-3, warmup_iters=10, eval_interval=50, eval_iters=10),
    ),
    "classify": (
        "--task=classify's own: AdamW at 1e-3, batch 16, 300 steps, evaluated every 50; from scratch a 4 x 128 model, context 128",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.1, position="rope", activation="relu2",
             batch_size=16, max_iters=300, learning_rate=1e-3, min_lr=1e-4, warmup_iters=20, eval_interval=50,
             eval_iters=8, sample_chars=0),
    ),
    "bigram": (
        "the lecture's bigram baseline settings (used by bigram.py)",
        dict(block_size=8, batch_size=32, max_iters=3000, learning_rate=1e-2, min_lr=1e-2,
             warmup_iters=0, weight_decay=0.0, eval_interval=300, eval_iters=200, dropout=0.0),
    ),
    "none": ("the dataclass defaults in config.py, unchanged", {}),
}


def preset_values(name: str) -> dict:
    return dict(PRESETS[name][1])


def _check_choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.3)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{name}={value!r} is not one of {', '.join(choices)}{hint}.")


def _nearest_divisor(n: int, near: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - near), d))
