"""--export_hf: our GPT as a Hugging Face directory (Llama family or GPT-2 shaped) that transformers
loads and that gives our logits, our greedy tokens and our chat template (issue 27, its first part)."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from test_hub_llama import FAMILIES, SHAPE, SMOLLM2, ours, reference_model, smollm2_chat_body  # noqa: E402

from config import GPTConfig  # noqa: E402
from gpt_final_version import GPT  # noqa: E402
from gptlib.errors import UserError  # noqa: E402
from gptlib.export_hf import export_hf  # noqa: E402


@pytest.mark.parametrize("family", FAMILIES)
def test_an_exported_model_loads_in_transformers_with_our_logits_and_greedy_tokens(family, tmp_path):
    reference_model(family, tmp_path / "hub")  # a random model of the family, in our GPT through hub_llama
    model = ours(tmp_path / "hub")
    with torch.no_grad():  # trained weights: nothing left at its initial value
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    export_hf(model, None, str(tmp_path / "out"))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    assert type(theirs).__name__ == reference_model.__globals__["CLASSES"][family]
    idx = torch.randint(0, SHAPE["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (theirs(idx).logits - model(idx)[0]).abs().max() < 1e-5
        greedy = theirs.generate(idx[:1, :5], max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert torch.equal(greedy, model.generate(idx[:1, :5], 16, temperature=0))


@pytest.mark.skipif(SMOLLM2 is None, reason="no ../shared/data/smollm2-135m-instruct")
def test_the_command_exports_a_chat_model_with_its_tokenizer_and_template(tmp_path):
    import model_handler
    from gptlib.chat_template import reply_prompt_ids
    from model_handler import ModelHandler

    smollm2_chat_body(tmp_path / "hub")
    model_handler.main([str(tmp_path / "hub"), f"--export_hf={tmp_path / 'out'}", "--device=cpu"])
    ours_handler = ModelHandler(str(tmp_path / "hub"), "cpu").load()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    messages = [{"role": "user", "content": "Lunch tomorrow? 😀"}, {"role": "assistant", "content": "yes, 1 pm"},
                {"role": "user", "content": "Где?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(ids) == reply_prompt_ids(ours_handler.vocab, "Где?", [("Lunch tomorrow? 😀", "yes, 1 pm")], "", 128)
    with torch.no_grad():
        made = theirs.generate(torch.tensor([list(ids)]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    reply = ours_handler.reply("Где?", [("Lunch tomorrow? 😀", "yes, 1 pm")], max_new_tokens=12, temperature=0)
    until_end = made[:made.index(2)] if 2 in made else made
    assert reply.text == tokenizer.decode(until_end)
    eos = json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"]
    assert (eos if isinstance(eos, list) else [eos]) == ours_handler.vocab.eos_ids  # a reply ends where ours does


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu", "relu"])
def test_a_gpt2_shaped_model_exports_as_gpt2lmheadmodel_with_our_logits(activation, tmp_path, capsys):
    """Learned positions, LayerNorm and biases (GPT-2 and its fine-tunes, or a model of ours built
    that way): transformers' GPT2LMHeadModel gives our logits and greedy tokens; the config has
    n_ctx for llama.cpp's converter."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=32, position="learned",
                       activation=activation, bias=True, qkv_bias=True, lm_head_bias=False, tie_embeddings=True,
                       dropout=0.0)
    model = GPT(config).eval()
    written = export_hf(model, None, str(tmp_path / "out"))
    assert written == ["config.json", "generation_config.json", "model.safetensors"]
    hub = json.loads((tmp_path / "out" / "config.json").read_text())
    assert hub["n_ctx"] == hub["n_positions"] == 32
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    assert type(theirs).__name__ == "GPT2LMHeadModel"
    idx = torch.randint(0, 40, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (theirs(idx).logits - model(idx)[0]).abs().max() < 1e-5
        greedy = theirs.generate(idx[:1, :4], max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(greedy, model.generate(idx[:1, :4], 12, temperature=0))


def test_what_has_no_transformers_architecture_is_refused_by_option(tmp_path):
    shipped_like = GPT(GPTConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=16, block_size=8, position="rope",
                                 activation="relu2", qk_norm=True))
    with pytest.raises(UserError, match=r"--activation=relu2 \(needs swiglu\).*--norm=layernorm \(needs rmsnorm\).*our QK-norm"):
        export_hf(shipped_like, None, str(tmp_path / "x"))
    learned_relu2 = GPT(GPTConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=16, block_size=8, activation="relu2"))
    with pytest.raises(UserError, match=r"--lm_head_bias=True \(needs False\).*--activation=relu2 \(needs one of"):
        export_hf(learned_relu2, None, str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    reference_model("llama", tmp_path / "hub")
    with pytest.raises(UserError, match="already holds files"):
        export_hf(ours(tmp_path / "hub"), None, str(tmp_path / "full"))
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# Our own tokenizers: a tokenizer.json that encodes as ours does, our chat layout as the template

CHAT_TEXT = ("Ana: lunch tomorrow? 😀 | at 1\nBo: Где? ok\x02 naïve — 42 'tis   spaced\n\nend\x03\x01x")
MESSAGES = [{"role": "system", "content": "never trained on"}, {"role": "user", "content": "hi", "name": "Ana"},
            {"role": "user", "content": "there", "name": "Ana"}, {"role": "user", "content": "Где? 😀", "name": "Bo"},
            {"role": "assistant", "content": "hey"}, {"role": "user", "content": "tomorrow?"}]


def our_vocab(kind: str):
    from gptlib import tokenizer
    if kind == "char":
        return tokenizer.CharTokenizer.from_text(CHAT_TEXT + "".join(m["content"] for m in MESSAGES) + " |:\n")
    if kind == "bpe":
        return tokenizer.ByteBPE.train(CHAT_TEXT * 4, 320)
    from test_tokenizer import GPT2_DIR
    if GPT2_DIR is None or not GPT2_DIR.is_dir():
        pytest.skip("no GPT-2 tokenizer files")
    return tokenizer.with_chat_markers(tokenizer.GPT2Tokenizer.from_directory(str(GPT2_DIR)))


def gpt2_shaped(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=64, position="learned",
                       activation="gelu_tanh", bias=True, qkv_bias=True, lm_head_bias=False, tie_embeddings=True,
                       dropout=0.0)
    model = GPT(config).eval()
    with torch.no_grad():  # weights further from their start: logits far enough apart for greedy to agree
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    return model


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_our_tokenizers_export_as_a_tokenizer_json_that_encodes_and_templates_as_ours(kind, tmp_path):
    from gptlib.chat_format import conversation_prompt, openai_exchanges, prompt_ids
    vocab = our_vocab(kind)
    model = gpt2_shaped(len(vocab))
    written = export_hf(model, vocab, str(tmp_path / "out"))
    assert "tokenizer.json" in written and "tokenizer_config.json" in written
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    plain = "Lunch at 1? 😀 naïve Где 'tis  ok\n"
    if kind == "char":  # the markers are characters: any text of its characters encodes alike
        assert theirs.encode(CHAT_TEXT, add_special_tokens=False) == vocab.encode(CHAT_TEXT)
    else:  # byte-level: typed text as ours, and a laid-out text's markers as their special ids
        assert theirs.encode(plain, add_special_tokens=False) == vocab.encode(plain)
        assert theirs.encode(CHAT_TEXT, add_special_tokens=False) == vocab.encode_with_specials(CHAT_TEXT)
    assert theirs.decode(vocab.encode(plain if kind != "char" else CHAT_TEXT)) == (plain if kind != "char" else CHAT_TEXT)
    message, history = openai_exchanges(MESSAGES)
    rendered = theirs.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == conversation_prompt(message, history)
    ids = list(theirs.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False))
    assert ids == (vocab.encode(rendered) if kind == "char" else prompt_ids(vocab, message, history))
    end = json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"]
    assert (end if isinstance(end, list) else [end])[0] == vocab.specials["\x03"]  # a reply ends at our end marker
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    prompt = torch.tensor([ids[-12:]])
    with torch.no_grad():
        assert (hf_model(prompt).logits - model(prompt)[0]).abs().max() < 1e-5
        greedy = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
    assert torch.equal(greedy, model.generate(prompt, 8, temperature=0))


def test_a_text_model_exports_without_a_chat_template(tmp_path):
    from gptlib.tokenizer import CharTokenizer
    vocab = CharTokenizer.from_text("ROMEO: what light\n")
    export_hf(gpt2_shaped(len(vocab)), vocab, str(tmp_path / "out"))
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert "chat_template" not in config and "eos_token" not in config
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert theirs.encode("ROMEO: light", add_special_tokens=False) == vocab.encode("ROMEO: light")
