"""ModelHandler: load a checkpoint into its model, generate text, save, export, resume training.

    python model_handler.py models/shakespeare_char.pt --prompt="ROMEO:" --max_new_tokens=500 \\
        --temperature=0.8 --top_k=50 --num_samples=2 --seed=1337 --out=samples/romeo.txt
    python model_handler.py models/NAME.pt --export=models/small.pt   # weights only, half size
    python model_handler.py models/me.pt --chat                         # talk to a model trained on chat pairs
    python model_handler.py models/me.pt --report                       # how much it sounds like you: me.report.md, me.blind.html
    python model_handler.py models/lecture.pt --attention=fast          # the lecture's model on the fast path
    python model_handler.py models/bigram.pt models/lecture.pt models/cpu.pt --compare=runs.png
    python model_handler.py path/to/gpt2_dir --prompt_ids=464,3290 --temperature=0   # GPT-2's weights (pretrained.py), token ids
    python model_handler.py models/lora.pt --export=models/merged.pt   # LoRA adapters merged into their base: a plain checkpoint
    python model_handler.py models/lora.pt --export_peft=exported/me   # the adapters for PEFT, over the base in the Hugging Face layout

From Python:

    from model_handler import ModelHandler
    handler = ModelHandler("models/shakespeare_char.pt").load()
    print(handler.generate("ROMEO:", max_new_tokens=200, seed=1)[0])
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

import gpt_final_version
from config import SampleConfig
from gptlib import devices, loss_curves, pretrained
from gptlib.atomic_write import write_text_atomically
from gptlib.build import model_from_checkpoint
from gptlib.chat_format import (
    CHAT_MARKERS,
    END_MARK,
    INPUT_MARK,
    OUTPUT_MARK,
    FittedText,
    conversation_prompt,
    fit_to_vocabulary,
    openai_exchanges,
    persona_prompt,
    recent_history,
)
from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.cli import apply, help_text, parse_args
from gptlib.corpus import seeded_generator
from gptlib.devices import choose_device
from gptlib.engine import Batcher, TokenStream, compiled_step, decoder_for, has_kv_cache, sample_rows
from gptlib.errors import UserError, run_cli
from gptlib.quantize import is_quantized, quantize_int8
from gptlib.tokenizer import Completion, TextStream


class ModelHandler:
    def __init__(self, path: str, device: str = "auto", attention: str = ""):
        self.path = path
        self.device = choose_device(device)
        self.attention = attention  # "fast" or "heads": convert a GPT to that attention class; "": as saved
        self.model = None
        self.vocab = None  # the checkpoint's tokenizer (tokenizer.py): characters, BPE or GPT-2's
        self.state: dict | None = None
        self.compiled_decoding = False  # replies use the compiled decode step (compile_decoding)
        self.batcher: Batcher | None = None  # replies join one continuous batch (start_batching; serve.py)

    # ------------------------------------------------------------------------------------------
    # Loading and saving

    def load(self) -> ModelHandler:
        """Read the checkpoint (weights_only) and rebuild the model it was trained as, in eval mode
        (gptlib.build, the builder training uses too). A hub directory or name (GPT-2's weights)
        loads too; a LoRA checkpoint loads its base and merges its adapters into it."""
        if pretrained.is_pretrained_source(self.path):
            state = pretrained.load_pretrained(self.path)
        else:
            state = load_checkpoint(self.path)
        self.model, self.vocab, self.state = model_from_checkpoint(self.path, state, self.attention)
        self.model.to(self.device).eval()
        return self

    def use_dtype(self, requested: str = "auto", compiled: bool = False) -> str:
        """Hold the weights in the dtype generating should use here (devices.inference_dtype: bfloat16
        on a CPU that multiplies it in hardware, for a compiled decode step); a line saying which and
        why. The checkpoint on disk is not touched."""
        self._require_loaded()
        dtype, reason = devices.inference_dtype(requested, devices.probe(self.device), compiled)
        if dtype == "int8":
            quantize_int8(self.model, torch.device(self.device).type)
        else:
            self.model.to(getattr(torch, dtype))
        return f"dtype: {reason}"

    def save(self, path: str, include_training_state: bool = True, half: bool = False) -> None:
        """Write the loaded checkpoint to `path` atomically. Without the training state (optimizer,
        random streams) and in half precision, a checkpoint is a quarter of the size: for shipping."""
        self._require_loaded()
        if next(self.model.parameters()).dtype != torch.float32 or is_quantized(self.model):
            raise UserError("these weights were cast for generating (use_dtype); load the checkpoint again to save it.")
        state = dict(self.state)
        if "pretrained" in state:  # a hub model becomes a checkpoint of ours: its tokenizer goes in it
            if self.vocab is None:
                raise UserError(f"{self.path} has no tokenizer files, so a checkpoint of it could not read text: "
                                "copy GPT-2's tokenizer files into that directory first.")
            state = {k: v for k, v in state.items() if k != "pretrained"} | {
                "tokenizer": self.vocab.state(), "train_config": {}, "iter_num": 0}
        state["model"] = {k: (v.half() if half and v.is_floating_point() else v).cpu()
                          for k, v in self.model.state_dict().items()}
        if not include_training_state:
            state.pop("optimizer", None)
            state.pop("rng", None)
        state.pop("format_version", None)
        save_checkpoint(state, path)

    def resume(self, max_iters: int, *options: str):
        """Continue training this checkpoint up to iteration max_iters (same as --resume)."""
        return gpt_final_version.main([f"--resume={self.path}", f"--max_iters={max_iters}", *options])

    # ------------------------------------------------------------------------------------------
    # Generation

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The prompt as ids (1, T); a character outside the vocabulary is a UserError naming it."""
        self._require_loaded()
        if self.vocab is None:
            raise UserError(f"{self.path} has no tokenizer files (vocab.json + merges.txt, encoder.json + vocab.bpe, "
                            "or tokenizer.json): copy GPT-2's there, or give token ids with --prompt_ids=464,3290.")
        return torch.tensor([self.vocab.encode(prompt or "\n")], dtype=torch.long, device=self.device)

    def generate(self, prompt: str = "\n", max_new_tokens: int = 500, temperature: float = 0.8,
                 top_k: int | None = None, num_samples: int = 1, seed: int | None = 1337,
                 use_cache: bool = True) -> list[str]:
        """Samples that begin with the prompt; the same seed gives the same samples."""
        start = self.encode_prompt(prompt)[0].tolist()
        samples = sample_rows(decoder_for(self.model, use_cache=use_cache), start, num_samples, max_new_tokens,
                              temperature, top_k, seeded_generator(seed))
        return [self.vocab.decode(start + sample) for sample in samples]

    def generate_ids(self, ids: list[int], max_new_tokens: int = 50, temperature: float = 0.8,
                     top_k: int | None = None, num_samples: int = 1, seed: int | None = 1337) -> list[list[int]]:
        """Token ids that follow `ids` (any model, whatever its tokenizer)."""
        self._require_loaded()
        vocab_size = self.model.config.vocab_size
        if not ids or not all(0 <= i < vocab_size for i in ids):
            raise UserError(f"prompt ids must be between 0 and {vocab_size - 1}, at least one; got {ids}.")
        samples = sample_rows(decoder_for(self.model), ids, num_samples, max_new_tokens, temperature, top_k,
                              seeded_generator(seed))
        return [ids + sample for sample in samples]

    # ------------------------------------------------------------------------------------------
    # Conversation: a model trained on chat pairs (python gpt_final_version.py --data=pairs.jsonl)

    @property
    def is_chat_model(self) -> bool:
        """Trained on chat pairs: its vocabulary has the markers of the two sides and of the end."""
        self._require_loaded()
        return self.vocab is not None and (self.uses_chat_template or all(m in self.vocab.specials for m in CHAT_MARKERS))

    @property
    def uses_chat_template(self) -> bool:
        """A hub model (SmolLM2, Qwen...) whose tokenizer_config.json has a chat template: conversations
        are laid out in the model's own template (gptlib/chat_template.py), not our markers."""
        return getattr(self.vocab, "kind", "") == "hub" and bool(self.vocab.config.get("chat_template"))

    def fit_to_vocabulary(self, text: str) -> FittedText:
        """`text` in characters this model knows, never refused (chat_format.fit_to_vocabulary)."""
        self._require_loaded()
        return fit_to_vocabulary(text, self.vocab)

    def reply(self, message: str, history=(), max_new_tokens: int = 200, temperature: float = 0.8,
              top_k: int | None = None, seed: int | None = None, deadline: float | None = None,
              system: str = "") -> Completion:
        """My answer to `message`, whole (reply_stream gives it as it is made)."""
        return self.reply_stream(message, history, max_new_tokens, temperature, top_k, seed, deadline, system).completion()

    def complete(self, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, seed: int | None = None, deadline: float | None = None) -> Completion:
        """The characters that follow `prompt`, whole (complete_stream gives them as they are made)."""
        return self.complete_stream(prompt, max_new_tokens, temperature, top_k, seed, deadline).completion()

    def reply_stream(self, message: str, history=(), max_new_tokens: int = 200, temperature: float = 0.8,
                     top_k: int | None = None, seed: int | None = None, deadline: float | None = None,
                     system: str = "") -> TextStream:
        """My answer to `message`, laid out as in training; earlier (their, mine) turns of the
        conversation come first as context. Generation ends at the end marker, or where the model
        starts another speaker's turn (a hub model's: its end-of-turn token; `system` is honoured where its template has a system role, else folded in)."""
        if self.uses_chat_template:
            from gptlib.chat_template import reply_prompt_ids  # hub models only: Jinja2 is the pretrained extra
            system = system or self.persona_system  # a request's own system prompt replaces the persona's
            ids = reply_prompt_ids(self.vocab, message, recent_history(history, self.context_turns), system,
                                   self.model.config.block_size)
            return self._stream_ids(ids, max_new_tokens, temperature, top_k, seed, deadline, tuple(self.vocab.eos_ids))
        if not self.is_chat_model:
            raise UserError(f"{self.path} was not trained on chat pairs (its vocabulary has no pair markers). "
                            "Fine-tune it with --data=pairs.jsonl, or sample it with --prompt.")
        context = conversation_prompt(message, history, self.context_turns)
        return self._stream(context, max_new_tokens, temperature, top_k, seed, deadline, END_MARK)

    @staticmethod
    def exchanges(messages: list) -> tuple[str, list[tuple[str, str]]]:
        """OpenAI chat messages as (their message, earlier exchanges) in the training layout
        (chat_format.openai_exchanges): the server calls this, so `name` names a group chat's speaker."""
        return openai_exchanges(messages)

    @property
    def persona_system(self) -> str:
        """The system prompt a hub chat model was fine-tuned with (--persona), "" for none."""
        persona = (self.state or {}).get("train_config", {}).get("persona", "")
        return persona_prompt(persona) if persona and self.uses_chat_template else ""

    @property
    def context_turns(self) -> int:
        """The earlier turns a reply was trained to see (TrainConfig.context_turns); a checkpoint from
        before the option saw the whole conversation it was given (0)."""
        return int((self.state or {}).get("train_config", {}).get("context_turns", 0) or 0)

    def complete_stream(self, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
                        top_k: int | None = None, seed: int | None = None, deadline: float | None = None) -> TextStream:
        """The characters that follow `prompt` (plain text models such as the Shakespeare one)."""
        start = "\n" if self.vocab.can_encode("\n") else self.vocab.decode([0])  # for an empty prompt
        return self._stream(prompt or start, max_new_tokens, temperature, top_k, seed, deadline, None)

    def compile_decoding(self) -> str:
        """Compile the engine's decode step now (not during the first reply); a line saying what happened."""
        refusal = self._no_compiled_step()
        if refusal:
            return refusal
        started = time.perf_counter()
        compiled_step(self.model)
        self.compiled_decoding = True
        return f"compiled the decode step in {time.perf_counter() - started:.1f}s"

    def start_batching(self, rows: int, compiled: bool = False) -> str:
        """From now on decode every reply in one continuous batch of up to `rows` replies (serve.py:
        many people at once cost little more than one); with `compiled`, the batch's step is compiled
        now. A line saying what happened."""
        if not self.has_kv_cache:
            return (f"note: {self.name} has no KV cache (per-Head attention or a bigram): replies are decoded "
                    "side by side, not batched" + (", and uncompiled" if compiled else ""))
        refusal = self._no_compiled_step() if compiled else None
        started = time.perf_counter()
        self.batcher = Batcher(self.model, rows, compiled=compiled and not refusal)
        said = f"decoding up to {rows} replies at once in one batch"
        if compiled and not refusal:
            said += f"; compiled its step in {time.perf_counter() - started:.1f}s"
        return said + (f"\n{refusal}" if refusal else "")

    @property
    def has_kv_cache(self) -> bool:
        """A GPT on the fast path (not per-Head attention, not a bigram): what batching and compiling need."""
        self._require_loaded()
        return has_kv_cache(self.model)

    def _no_compiled_step(self) -> str | None:
        """Why this model's decode step cannot be compiled here, or None."""
        if not self.has_kv_cache:
            return f"note: {self.name} has no KV cache (per-Head attention or a bigram): replies stay uncompiled"
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            return f"note: the compiled decode step is for cpu and cuda, not {self.device}: replies stay uncompiled"
        return None

    def _stream(self, context, max_new_tokens, temperature, top_k, seed, deadline, stop) -> TextStream:
        """The engine's tokens after `context` as text. The model sees at most block_size tokens
        (of the last block_size characters) of context, which also bounds the cost of a long conversation."""
        block = self.model.config.block_size
        ids = self.vocab.encode_with_specials(context[-block:])[-block:]
        # a reply ends at the end marker, or where the model starts someone else's turn (the marker
        # that opens their message); it never writes the marker that opens a reply of mine
        stop_token = None if stop is None else (self.vocab.specials[stop], self.vocab.specials[INPUT_MARK])
        banned = (self.vocab.specials[OUTPUT_MARK],) if stop is not None else ()
        return self._stream_ids(ids, max_new_tokens, temperature, top_k, seed, deadline, stop_token, banned)

    def _stream_ids(self, ids, max_new_tokens, temperature, top_k, seed, deadline, stop_token, banned=()) -> TextStream:
        """The engine's tokens after prompt ids, as text, ending at stop_token (one id or several)."""
        sampling = (max_new_tokens, temperature, top_k, seeded_generator(seed), stop_token, deadline, banned)
        if self.batcher is not None:
            tokens = self.batcher.submit(ids, *sampling)
        else:
            tokens = TokenStream(decoder_for(self.model, compiled=self.compiled_decoding), ids, *sampling)
        return TextStream(tokens, self.vocab, len(ids))

    def chat(self, options: SampleConfig, lines=None, write=print) -> list[tuple[str, str]]:
        """A terminal conversation: each line typed is a message, the model answers as me. An
        empty line or end of input ends it. Returns the conversation."""
        lines = lines if lines is not None else _typed_lines()
        history: list[tuple[str, str]] = []
        generator_seed = options.seed
        for line in lines:
            message = line.rstrip("\n")
            if not message.strip():
                break
            fitted = self.fit_to_vocabulary(message)
            if fitted.replaced:
                write("(read as close characters this model knows: "
                      + " ".join(f"{a!r}->{b!r}" for a, b in fitted.replaced.items()) + ")")
            if fitted.dropped:
                write(f"(left out characters this model never saw: {' '.join(map(repr, fitted.dropped))})")
            message = fitted.text
            sampling = (options.max_new_tokens, options.temperature, options.top_k, generator_seed)
            generator_seed += 1  # the same session replays the same way, yet each answer differs
            if write is print:  # on the terminal the answer appears as it is generated
                print(f"{self.name}> ", end="", flush=True)
                stream = self.reply_stream(message, history, *sampling)
                for piece in stream:
                    print(piece, end="", flush=True)
                answer = stream.completion()
                print()
            else:
                answer = self.reply(message, history, *sampling)
                write(f"{self.name}> {answer.text}")
            history.append((message, answer.text))
        return history

    def report(self, options=None) -> dict:
        """The report of a chat model on its held-out conversations (gptlib/persona_report.py), written
        beside the checkpoint, a summary printed; `options` a persona_report.ReportOptions. Its numbers."""
        from gptlib.persona_report import ReportOptions, write_report

        self._require_loaded()
        if "pretrained" in self.state:
            raise UserError(f"{self.path} holds published weights, not a model trained on chat pairs: the report "
                            "needs a chat model (fine-tune it with --data=pairs.jsonl).")
        return write_report(self.model, self.vocab, self.state["train_config"], self.state["model_config"], self.path,
                            options or ReportOptions())

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def _require_loaded(self):
        if self.model is None:
            raise RuntimeError("call load() first")


# ==============================================================================================
# Command line


@dataclasses.dataclass
class HandlerOptions:
    export: str = ""  # write a weights-only copy of the checkpoint here (no optimizer state)
    export_hf: str = ""  # write the model to this directory in the Hugging Face layout (config.json, model.safetensors, tokenizer files) for transformers; Llama-family models (gptlib/export_hf.py)
    export_gguf: str = ""  # write the model and its tokenizer to this GGUF file for llama.cpp and Ollama (gptlib/export_gguf.py)
    gguf_dtype: str = "float16"  # with --export_gguf: float16, float32 or bfloat16 for the matrices (norms and biases stay float32)
    export_peft: str = ""  # a LoRA run: write DIR/base (its base model, the Hugging Face layout) and DIR/adapter (adapter_config.json + adapter_model.safetensors) for peft.PeftModel (gptlib/export_peft.py)
    export_half: bool = True  # store the exported weights as float16: half the size, same samples
    attention: str = ""  # "fast" or "heads": run (and --export) a GPT with that attention class, weights converted
    compare: str = ""  # draw the loss curves of the checkpoints given (A.pt B.pt ...) into this PNG
    prompt_ids: str = ""  # start from these token ids (464,3290) and print ids: any model, e.g. GPT-2's before its tokenizer is wired
    report: bool = False  # a chat model's report on its held-out conversations, beside it: NAME.report.md/.json (bits per byte against its start, style card, failures, copies; numbers only) and NAME.blind.html (a blind test, with text)
    report_contexts: int = 100  # with --report: held-out conversations the model answers (the style card, failures, copies, blind test)
    copy_words: int = 8  # with --report: a reply repeating this many words of a training reply in a row counts as a copy
    show_text: bool = False  # with --report: also put message text in the report (frequent words, the worst copies); off: numbers only
    report_data: str = ""  # with --report: the chat pairs (.jsonl) if not where the checkpoint was trained on them
    classify: str = ""  # label this text with a classifier (gpt_final_version.py --task=classify): the label, then every label's probability
    classify_file: str = ""  # label each line of this file with a classifier, one output line per text (the texts are not echoed)


USAGE = ("usage: python model_handler.py CHECKPOINT [--name=value ...]\n"
         "       python model_handler.py CHECKPOINT [CHECKPOINT ...] --compare=runs.png")


def main(argv=None):
    args = parse_args(argv or [], [SampleConfig, HandlerOptions], max_positional=1000)
    if args.help:
        print(help_text([SampleConfig, HandlerOptions], USAGE, show_presets=False))
        return None
    if not args.positional:
        raise UserError(f"no checkpoint given. {USAGE}")
    options = apply(SampleConfig(), args.overrides)
    handler_options = apply(HandlerOptions(), args.overrides)
    options.validate()
    if handler_options.compare:
        return loss_curves.draw_runs(args.positional, handler_options.compare)
    if len(args.positional) > 1:
        raise UserError(f"{len(args.positional)} checkpoints given; one at a time, except with --compare=PNG.")
    if handler_options.export_peft:  # the adapters apart from their base, so not the merged model a handler loads
        return _export_peft(args.positional[0], handler_options.export_peft)
    if handler_options.classify or handler_options.classify_file:  # a classifier, not a language model
        from gptlib.classify import classify_command
        return classify_command(args.positional[0], handler_options.classify, handler_options.classify_file, options.device)
    handler = ModelHandler(args.positional[0], options.device, handler_options.attention).load()
    if handler_options.export_hf:  # the weights as trained: float32, no dtype change for decoding
        from gptlib.export_hf import export_hf
        written = export_hf(handler.model, handler.vocab, handler_options.export_hf)
        print(f"exported {handler.path} -> {handler_options.export_hf}: {', '.join(written)} (load it with "
              "transformers' AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained)")
        return written
    if handler_options.export_gguf:
        return _export_gguf(handler, handler_options)
    if not handler_options.export:
        print(handler.use_dtype(options.dtype), file=sys.stderr)  # stderr: stdout holds only the samples
    if options.chat:
        if not handler.is_chat_model:
            handler.reply("")  # raises the error that says how to make a chat model
        print(f"chatting with {handler.path}: type a message and press Enter; an empty line or Ctrl-D ends.")
        return handler.chat(options)
    if handler_options.report:
        return _report(handler, handler_options, options)
    if handler_options.prompt_ids:
        return _print_ids(handler, handler_options.prompt_ids, options)
    if handler_options.export:
        handler.save(handler_options.export, include_training_state=False, half=handler_options.export_half)
        print(f"exported {handler.path} -> {handler_options.export} ({Path(handler_options.export).stat().st_size:,} bytes)")
        return None
    samples = handler.generate(options.prompt, options.max_new_tokens, options.temperature, options.top_k,
                               options.num_samples, options.seed, options.use_cache)
    separator = "\n" + "-" * 40 + "\n"
    text = separator.join(samples)
    print(text)
    if options.out:
        write_text_atomically(options.out, text + "\n")
        print(f"(written to {options.out})")
    return samples


def _export_gguf(handler: ModelHandler, handler_options: HandlerOptions) -> dict:
    """The GGUF file and, beside it, NAME.Modelfile for Ollama (its template made before anything is
    written: a template Ollama cannot hold is said, and the GGUF still goes for llama.cpp)."""
    from gptlib.export_gguf import export_gguf
    from gptlib.export_ollama import modelfile
    gguf = Path(handler_options.export_gguf)
    modelfile_path = gguf.with_name(gguf.stem + ".Modelfile")
    if modelfile_path.exists():
        raise UserError(f"{modelfile_path} already exists; give --export_gguf a new name (nothing is overwritten).")
    try:
        ollama = modelfile(gguf.name, handler.vocab, handler.model.config.block_size, handler.persona_system,
                           handler.context_turns)
    except UserError as why:
        ollama = None
        print(f"note: no Modelfile for Ollama: {why}", file=sys.stderr)
    summary = export_gguf(handler.model, handler.vocab, str(gguf), handler_options.gguf_dtype, Path(handler.path).stem)
    print(f"exported {handler.path} -> {gguf} ({summary['architecture']}, {summary['tensors']} tensors in "
          f"{summary['dtype']}, {summary['bytes']:,} bytes; run it with llama.cpp: llama-cli -m {gguf})")
    if ollama is not None:
        write_text_atomically(str(modelfile_path), ollama)
        summary["modelfile"] = str(modelfile_path)
        print(f"and {modelfile_path} for Ollama: ollama create NAME -f {modelfile_path} && ollama run NAME")
    return summary


def _export_peft(path: str, directory: str) -> dict[str, list[str]]:
    from gptlib.export_peft import export_peft
    written = export_peft(path, directory)
    print(f"exported {path} -> {directory}/base ({', '.join(written['base'])}) and {directory}/adapter "
          f"({', '.join(written['adapter'])}): load it with peft.PeftModel.from_pretrained(AutoModelForCausalLM."
          f"from_pretrained('{directory}/base'), '{directory}/adapter')")
    return written


def _report(handler: ModelHandler, handler_options: HandlerOptions, options: SampleConfig) -> dict:
    from gptlib.persona_report import ReportOptions

    for name in ("report_contexts", "copy_words"):
        if getattr(handler_options, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(handler_options, name)}.")
    return handler.report(ReportOptions(handler_options.report_contexts, handler_options.copy_words,
                                        handler_options.show_text, temperature=options.temperature, seed=options.seed,
                                        data=handler_options.report_data))


def _print_ids(handler: ModelHandler, text: str, options: SampleConfig) -> list[list[int]]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--prompt_ids={text!r}: write token ids separated by commas, as in --prompt_ids=464,3290.") from None
    samples = handler.generate_ids(ids, options.max_new_tokens, options.temperature, options.top_k,
                                   options.num_samples, options.seed)
    for row in samples:
        print(",".join(map(str, row)))
    return samples


def _typed_lines():
    """Lines typed at a prompt (or piped in); Ctrl-D ends the conversation."""
    while True:
        try:
            if sys.stdin.isatty():
                yield input("you> ")
            else:  # piped in: echo each message so the transcript reads as a conversation
                line = next(sys.stdin).rstrip("\n")
                print(f"you> {line}")
                yield line
        except (EOFError, StopIteration):
            return


if __name__ == "__main__":
    run_cli(main)
