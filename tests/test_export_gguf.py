"""--export_gguf: one GGUF file for llama.cpp and Ollama (issue 27, point 3). gguf's own reader gives
back every tensor bit for bit under llama.cpp's names and the metadata llama.cpp reads; the token
table encodes as ours does; llama.cpp itself, where its Python package is installed, gives our
greedy tokens."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from test_export_hf import gpt2_shaped, our_vocab  # noqa: E402
from test_hub_llama import FAMILIES, SMOLLM2, ours, reference_model, smollm2_chat_body  # noqa: E402

from gpt_final_version import apply_rotary, rotary_angles  # noqa: E402
from gptlib.byte_level import bytes_to_unicode  # noqa: E402
from gptlib.errors import UserError  # noqa: E402
from gptlib.export_gguf import export_gguf, gguf_tensors, pairs_adjacent  # noqa: E402
from gptlib.tokenizer import GPT2_SPLIT_PATTERN, CharTokenizer  # noqa: E402

ARCH = {"llama": "llama", "llama3-scaled": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}


def field(reader, key):
    return reader.get_field(key).contents()


def numbered_vocab(size: int) -> CharTokenizer:
    """A character vocabulary of `size` characters, for models made without a text."""
    return CharTokenizer([chr(0x21 + i) for i in range(size)])


def read_back(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {tensor.name: tensor for tensor in reader.tensors}


def expected_bytes(tensor: torch.Tensor, dtype: str) -> bytes:
    data = tensor.numpy()
    if data.ndim == 1 or dtype == "float32":
        return data.astype(np.float32).tobytes()
    if dtype == "float16":
        return data.astype(np.float16).tobytes()
    return (tensor.to(torch.bfloat16).view(torch.int16).numpy()).tobytes()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_llama_family_model_reads_back_bit_for_bit_under_llama_cpp_names(family, dtype, tmp_path):
    reference_model(family, tmp_path / "hub")
    model = ours(tmp_path / "hub")
    config = model.config
    summary = export_gguf(model, numbered_vocab(config.vocab_size), str(tmp_path / "m.gguf"), dtype=dtype)
    reader, tensors = read_back(tmp_path / "m.gguf")
    arch = ARCH[family]
    assert summary["architecture"] == arch == field(reader, "general.architecture")
    names = {"token_embd.weight", "output_norm.weight"} | {f"blk.{i}.{t}.weight" for i in range(config.n_layer) for t in (
        "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    names |= {f"blk.{i}.attn_{p}.bias" for i in range(config.n_layer) for p in "qkv"} if arch == "qwen2" else set()
    names |= {f"blk.{i}.attn_{p}_norm.weight" for i in range(config.n_layer) for p in "qk"} if arch == "qwen3" else set()
    names |= {"output.weight"} if not config.tie_embeddings else set()
    names |= {"rope_freqs.weight"} if config.rope_scaling_factor else set()
    assert set(tensors) == names
    for name, tensor in gguf_tensors(model.state_dict(), config, arch).items():
        assert bytes(tensors[name].data.tobytes()) == expected_bytes(tensor, dtype), name
        assert list(reversed(tensors[name].shape.tolist())) == list(tensor.shape)  # ggml lists dimensions innermost first
    facts = {f"{arch}.block_count": config.n_layer, f"{arch}.context_length": config.block_size,
             f"{arch}.embedding_length": config.n_embd, f"{arch}.feed_forward_length": config.ffn_hidden,
             f"{arch}.attention.head_count": config.n_head, f"{arch}.attention.head_count_kv": config.kv_heads,
             f"{arch}.rope.dimension_count": config.head_size, "tokenizer.ggml.model": "gpt2"}
    assert {key: field(reader, key) for key in facts} == facts
    assert field(reader, f"{arch}.rope.freq_base") == pytest.approx(config.rope_theta)
    assert field(reader, "general.file_type") == {"float16": 1, "bfloat16": 32}[dtype]


def test_llama_graph_pairs_are_our_halves_reordered():
    """llama.cpp's "llama" graph turns adjacent pairs (x0, x1), (x2, x3)...; ours turns (x_i, x_i+d/2).
    Rows reordered by pairs_adjacent, then turned by pairs, give our turned rows reordered alike."""
    heads, size, width = 2, 8, 5
    weight = torch.randn(heads * size, width)
    x = torch.randn(3, width)
    cos, sin = rotary_angles(torch.arange(3), 1.0 / 10000 ** (torch.arange(0, size, 2).float() / size))
    ours_turned = apply_rotary((x @ weight.t()).view(3, heads, size).transpose(0, 1), cos, sin)  # (H, T, hs)
    theirs = (x @ pairs_adjacent(weight, heads).t()).view(3, heads, size // 2, 2).transpose(0, 1)
    turned = torch.stack((theirs[..., 0] * cos - theirs[..., 1] * sin, theirs[..., 0] * sin + theirs[..., 1] * cos), -1)
    expected = pairs_adjacent(ours_turned.transpose(0, 1).reshape(3, heads * size).t(), heads).t()
    assert torch.allclose(turned.transpose(0, 1).reshape(3, heads * size), expected, atol=1e-6)


def test_a_gpt2_shaped_model_keeps_its_stacked_attention_and_positions(tmp_path):
    vocab = our_vocab("char")
    model = gpt2_shaped(len(vocab))
    export_gguf(model, vocab, str(tmp_path / "m.gguf"), dtype="float32")
    reader, tensors = read_back(tmp_path / "m.gguf")
    assert field(reader, "general.architecture") == "gpt2"
    assert {"position_embd.weight", "output_norm.bias", "blk.0.attn_qkv.weight", "blk.0.ffn_down.bias"} <= set(tensors)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses the token embedding
    assert np.array_equal(tensors["blk.0.attn_qkv.weight"].data, model.state_dict()["blocks.0.attn.qkv.weight"].numpy())
    assert field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)


def llama_cpp_encode(tokens: list[str], merges: list[str], text: str) -> list[int]:
    """llama.cpp's byte-level BPE, written out for the test: GPT-2's pre-split, each piece in byte
    stand-ins, split into characters, the lowest-ranked adjacent merge applied until none is left."""
    import regex
    stand_in = bytes_to_unicode()
    rank = {tuple(merge.split(" ")): i for i, merge in enumerate(merges)}
    index = {token: i for i, token in enumerate(tokens)}
    ids = []
    for piece in regex.findall(GPT2_SPLIT_PATTERN, text):
        symbols = list("".join(stand_in[b] for b in piece.encode("utf-8")))
        while len(symbols) > 1:
            pairs = [(rank.get(pair, len(rank)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
            best, at = min(pairs)
            if best == len(rank):
                break
            symbols[at:at + 2] = [symbols[at] + symbols[at + 1]]
        ids += [index[symbol] for symbol in symbols]
    return ids


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_the_token_table_encodes_as_ours_and_carries_the_chat_layout(kind, tmp_path):
    from gptlib.export_tokenizer import MARKERS_TEMPLATE
    vocab = our_vocab(kind)
    export_gguf(gpt2_shaped(len(vocab)), vocab, str(tmp_path / "m.gguf"))
    reader, _ = read_back(tmp_path / "m.gguf")
    tokens, merges = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.merges")
    text = "Ana: lunch tomorrow? 😀 | at 1\nBo: Где? naïve — 'tis"
    assert llama_cpp_encode(tokens, merges, text) == vocab.encode(text)
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert field(reader, "tokenizer.ggml.eos_token_id") == field(reader, "tokenizer.ggml.eot_token_id") == vocab.specials["\x03"]
    assert field(reader, "tokenizer.chat_template") == MARKERS_TEMPLATE
    control = [i for i, kind_of in enumerate(field(reader, "tokenizer.ggml.token_type")) if kind_of == gguf.TokenType.CONTROL]
    assert control == ([] if kind == "char" else sorted(vocab.specials.values()))  # a character model's markers are text


@pytest.mark.slow  # 49,152 tokens through the writer and the reader
@pytest.mark.skipif(SMOLLM2 is None, reason="no ../shared/data/smollm2-135m-instruct")
def test_a_hub_chat_model_carries_its_own_tokenizer_and_template(tmp_path):
    from model_handler import ModelHandler
    smollm2_chat_body(tmp_path / "hub")
    handler = ModelHandler(str(tmp_path / "hub"), "cpu").load()
    export_gguf(handler.model, handler.vocab, str(tmp_path / "m.gguf"))
    reader, _ = read_back(tmp_path / "m.gguf")
    hub = json.loads((SMOLLM2 / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 49152 and all(tokens[i] == token for token, i in hub["model"]["vocab"].items())
    assert field(reader, "tokenizer.ggml.pre") == "smollm"
    assert field(reader, "tokenizer.ggml.eos_token_id") == 2  # <|im_end|>
    template = json.loads((SMOLLM2 / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]
    assert field(reader, "tokenizer.chat_template") == template


def test_what_cannot_be_exported_is_refused_and_nothing_is_overwritten(tmp_path):
    vocab = numbered_vocab(40)
    relu = gpt2_shaped(40)
    relu.config.activation = "relu"
    with pytest.raises(UserError, match="--activation=gelu_tanh"):
        export_gguf(relu, vocab, str(tmp_path / "relu.gguf"))
    assert not (tmp_path / "relu.gguf").exists()
    with pytest.raises(UserError, match="--gguf_dtype=int4"):
        export_gguf(gpt2_shaped(40), vocab, str(tmp_path / "m.gguf"), dtype="int4")
    (tmp_path / "kept.gguf").write_bytes(b"mine")
    with pytest.raises(UserError, match="already exists"):
        export_gguf(gpt2_shaped(40), vocab, str(tmp_path / "kept.gguf"))
    assert (tmp_path / "kept.gguf").read_bytes() == b"mine"


# ----------------------------------------------------------------------------------------------
# llama.cpp itself (llama-cpp-python builds from source in minutes: not in CI, run where installed


def llama_cpp_greedy(path, prompt: list[int], steps: int) -> list[int]:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, verbose=False)
    made = []
    for token in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        made.append(token)
        if len(made) == steps:
            break
    return made


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", *FAMILIES])
def test_llama_cpp_gives_our_greedy_tokens(family, tmp_path):
    pytest.importorskip("llama_cpp")
    if family == "gpt2":
        vocab = our_vocab("char")
        model = gpt2_shaped(len(vocab))
    else:
        reference_model(family, tmp_path / "hub")
        model = ours(tmp_path / "hub")
        vocab = numbered_vocab(model.config.vocab_size)
        with torch.no_grad():  # logits far enough apart that float rounding cannot swap the top two
            for param in model.parameters():
                param.mul_(3.0)
    export_gguf(model, vocab, str(tmp_path / "m.gguf"), dtype="float32")
    prompt = [3, 17, 5, 9, 30, 11]
    ours_tokens = model.generate(torch.tensor([prompt]), 12, temperature=0)[0, len(prompt):].tolist()
    assert llama_cpp_greedy(tmp_path / "m.gguf", prompt, 12) == ours_tokens


@pytest.mark.slow  # a short training run and two exports, each its own process
def test_the_command_exports_a_trained_character_model_once(small_corpus, tmp_path):
    from conftest import assert_clean_error, run_command, tiny_run_args
    gpt2_options = dict(position="learned", activation="gelu_tanh", qkv_bias="true", lm_head_bias="false",
                        tie_embeddings="true", max_iters=20)
    trained = run_command("gpt_final_version.py", *tiny_run_args(small_corpus, tmp_path / "m.pt", **gpt2_options))
    assert trained.returncode == 0, trained.stderr
    done = run_command("model_handler.py", tmp_path / "m.pt", f"--export_gguf={tmp_path / 'm.gguf'}", "--device=cpu")
    assert done.returncode == 0, done.stderr
    assert "(gpt2, " in done.stdout and "float16" in done.stdout
    reader, tensors = read_back(tmp_path / "m.gguf")
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    from model_handler import ModelHandler
    vocab = ModelHandler(str(tmp_path / "m.pt"), "cpu").load().vocab
    assert llama_cpp_encode(field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.merges"),
                            "ROMEO: what light") == vocab.encode("ROMEO: what light")
    modelfile = (tmp_path / "m.Modelfile").read_text(encoding="utf-8")  # beside it, for Ollama: a text model continues its prompt
    assert "FROM ./m.gguf" in modelfile and '{{ .Prompt }}' in modelfile and "num_ctx 32" in modelfile
    (tmp_path / "m.gguf").unlink()  # the GGUF gone, the Modelfile kept: still never overwritten
    again = run_command("model_handler.py", tmp_path / "m.pt", f"--export_gguf={tmp_path / 'm.gguf'}", "--device=cpu")
    assert_clean_error(again, "m.Modelfile already exists")
    assert not (tmp_path / "m.gguf").exists()


# ----------------------------------------------------------------------------------------------
# llama.cpp's own converter (convert_hf_to_gguf.py) on our --export_hf directory writes the same
# tensors and tokenizer as --export_gguf. Needs a llama.cpp checkout: LLAMA_CPP_DIR=PATH (its
# requirements: transformers, sentencepiece); skipped without one.

LLAMA_CPP_DIR = os.environ.get("LLAMA_CPP_DIR")
REAL_TOKENIZERS = {"llama": "smollm2-135m-instruct", "llama3-scaled": "smollm2-135m-instruct",
                   "qwen2": "qwen2.5-0.5b-instruct", "qwen3": "qwen2.5-0.5b-instruct"}


def hub_body_with_real_tokenizer(family: str, directory: Path) -> Path:
    """A tiny random model of `family` with a real model's tokenizer files (a hub directory)."""
    from test_hub_llama import CLASSES
    source = SMOLLM2.parent / REAL_TOKENIZERS[family] if SMOLLM2 else Path("no shared data")
    if not source.is_dir():
        pytest.skip(f"no {source}")
    torch.manual_seed(0)
    config = FAMILIES[family]()
    config.vocab_size = 49152 if source.name.startswith("smollm2") else 151936
    getattr(transformers, CLASSES[family])(config).save_pretrained(directory)
    for path in source.iterdir():
        if path.is_file() and path.name != "config.json" and path.suffix in (".json", ".txt"):
            shutil.copy(path, directory / path.name)
    return directory


@pytest.mark.slow
@pytest.mark.skipif(not LLAMA_CPP_DIR, reason="set LLAMA_CPP_DIR to a llama.cpp checkout to compare with its converter")
@pytest.mark.parametrize("family", ["gpt2", *FAMILIES])
def test_llama_cpp_converter_writes_what_we_write(family, tmp_path):
    from gptlib.export_hf import export_hf
    from model_handler import ModelHandler
    if family == "gpt2":
        vocab = our_vocab("gpt2")
        vocab = type(vocab)(vocab.merges, {"<|endoftext|>": 50256}, vocab.byte_ids)  # GPT-2's own, no markers
        model = gpt2_shaped(len(vocab))
    else:
        handler = ModelHandler(str(hub_body_with_real_tokenizer(family, tmp_path / "hub")), "cpu").load()
        model, vocab = handler.model, handler.vocab
    export_hf(model, vocab, str(tmp_path / "hf"))
    export_gguf(model, vocab, str(tmp_path / "ours.gguf"), dtype="float32")
    converted = subprocess.run([sys.executable, "convert_hf_to_gguf.py", str(tmp_path / "hf"), "--outtype", "f32",
                                "--outfile", str(tmp_path / "theirs.gguf")], cwd=LLAMA_CPP_DIR, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(Path(LLAMA_CPP_DIR) / "gguf-py")})
    assert converted.returncode == 0, converted.stderr[-2000:]
    ours_reader, ours_tensors = read_back(tmp_path / "ours.gguf")
    theirs_reader, theirs_tensors = read_back(tmp_path / "theirs.gguf")
    assert set(ours_tensors) == set(theirs_tensors)
    for name, tensor in theirs_tensors.items():
        assert ours_tensors[name].data.tobytes() == tensor.data.tobytes(), name
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre",
                "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):
        theirs = theirs_reader.get_field(key)
        assert (field(ours_reader, key) if ours_reader.get_field(key) else None) == (theirs.contents() if theirs else None), key


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2", "smollm2"])
def test_llama_cpp_tokenizes_as_we_do(kind, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    if kind == "smollm2":
        from model_handler import ModelHandler
        if SMOLLM2 is None:
            pytest.skip("no ../shared/data/smollm2-135m-instruct")
        smollm2_chat_body(tmp_path / "hub")
        handler = ModelHandler(str(tmp_path / "hub"), "cpu").load()
        model, vocab = handler.model, handler.vocab
    else:
        vocab = our_vocab(kind)
        model = gpt2_shaped(len(vocab))
    export_gguf(model, vocab, str(tmp_path / "m.gguf"))
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, vocab_only=True, verbose=False)
    text = "Ana: lunch tomorrow? 😀 | at 1\nBo: Где? naïve — 'tis   spaced 2024"
    if kind == "char":
        text = "".join(ch for ch in text if ch in vocab.index)
    assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == vocab.encode(text)
    assert llm.detokenize(vocab.encode(text)).decode("utf-8") == text

