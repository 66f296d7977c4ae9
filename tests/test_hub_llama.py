"""Llama-family hub models in our GPT, proven equal to `transformers` on small random models of each
architecture (no hub is reachable here): logits to 1e-5, greedy tokens identical to its generate(),
from one safetensors file and from shards; our KV-cache engine gives the same tokens."""
import json

import pytest
import torch

from gpt_final_version import GPT
from gptlib import engine, pretrained
from gptlib.errors import UserError

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

SHAPE = dict(vocab_size=96, hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {
    "llama": lambda: transformers.LlamaConfig(**SHAPE, rope_theta=100000.0, tie_word_embeddings=True),
    "llama3-scaled": lambda: transformers.LlamaConfig(**SHAPE, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}, tie_word_embeddings=False),
    "qwen2": lambda: transformers.Qwen2Config(**SHAPE, rope_theta=1e6, tie_word_embeddings=True),
    "qwen3": lambda: transformers.Qwen3Config(**SHAPE, head_dim=16, rope_theta=1e6, tie_word_embeddings=False),
}
CLASSES = {"llama": "LlamaForCausalLM", "llama3-scaled": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
           "qwen3": "Qwen3ForCausalLM"}


def reference_model(family, directory, shard=None):
    torch.manual_seed(0)
    model = getattr(transformers, CLASSES[family])(FAMILIES[family]()).eval()
    with torch.no_grad():  # random biases and norm gains, so a mapping that drops them shows
        for name, param in model.named_parameters():
            if name.endswith(("bias", "norm.weight", "layernorm.weight")):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory, max_shard_size=shard) if shard else model.save_pretrained(directory)
    return model


def ours(directory):
    state = pretrained.load_pretrained(str(directory))
    from config import GPTConfig
    model = GPT(GPTConfig(**state["model_config"])).eval()
    model.load_state_dict(state["model"])
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_greedy_tokens_equal_transformers(family, tmp_path):
    reference = reference_model(family, tmp_path)
    model = ours(tmp_path)
    idx = torch.randint(0, SHAPE["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(idx).logits
        got, _ = model(idx)
    assert (got - expected).abs().max() < 1e-5
    prompt = idx[:1, :5]
    with torch.no_grad():
        theirs = reference.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(model.generate(prompt, 20, temperature=0), theirs)
    expected_reply = theirs[0, 5:].tolist()
    assert list(engine.TokenStream(engine.decoder_for(model), prompt[0].tolist(), 20, temperature=0)) == expected_reply
    two_rows = engine.sample_rows(engine.decoder_for(model), prompt[0].tolist(), 2, 20, temperature=0)
    assert two_rows == [expected_reply, expected_reply]


def test_sharded_safetensors_load_the_same_weights(tmp_path):
    reference_model("qwen3", tmp_path / "one")
    reference_model("qwen3", tmp_path / "shards", shard="20KB")
    assert (tmp_path / "shards" / pretrained.SHARD_INDEX).is_file()
    one, shards = ours(tmp_path / "one").state_dict(), ours(tmp_path / "shards").state_dict()
    assert one.keys() == shards.keys() and all(torch.equal(one[k], shards[k]) for k in one)


def test_unknown_tensor_and_unsupported_config_are_refused_by_name(tmp_path):
    reference_model("llama", tmp_path)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file({**weights, "model.layers.0.self_attn.extra.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match=r"layers\.0\.self_attn\.extra\.weight is unexpected"):
        pretrained.load_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(UserError, match="hidden_act 'gelu'"):
        pretrained.load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    with pytest.raises(UserError, match="model_type 'mamba'"):
        pretrained.load_pretrained(str(tmp_path))


SMOLLM2 = next((p / "shared" / "data" / "smollm2-135m-instruct" for p in
                [__import__("pathlib").Path(__file__).resolve().parents[n] for n in (1, 2, 3)]
                if (p / "shared" / "data" / "smollm2-135m-instruct" / "tokenizer.json").is_file()), None)


@pytest.mark.skipif(SMOLLM2 is None, reason="no ../shared/data/smollm2-135m-instruct")
def test_a_hub_chat_model_answers_in_its_template_and_stops_at_end_of_turn(tmp_path):
    """SmolLM2's real tokenizer and template on a tiny random body: the reply's prompt is what
    transformers' apply_chat_template gives, and the reply is transformers' greedy tokens up to
    <|im_end|>, without markup."""
    import shutil

    from gptlib.chat_template import reply_prompt_ids
    from model_handler import ModelHandler

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**SHAPE, "vocab_size": 49152, "max_position_embeddings": 128}, tie_word_embeddings=True, eos_token_id=2)
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        shutil.copy(SMOLLM2 / name, tmp_path / name)
    handler = ModelHandler(str(tmp_path), "cpu").load()
    assert handler.is_chat_model and handler.uses_chat_template
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 😀"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Привет?"}]
    expected = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = reply_prompt_ids(handler.vocab, "Привет?", [("Hi 😀", "Hello!")], "Be brief.", 128)
    assert ids == list(expected)
    with torch.no_grad():
        generated = reference.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False, eos_token_id=2,
                                       pad_token_id=2)[0, len(ids):].tolist()
    reply = handler.reply("Привет?", [("Hi 😀", "Hello!")], max_new_tokens=30, temperature=0, system="Be brief.")
    until_end = generated[:generated.index(2)] if 2 in generated else generated
    assert reply.text == theirs.decode(until_end)
    assert "<|im_" not in reply.text


@pytest.mark.skipif(SMOLLM2 is None, reason="no ../shared/data/smollm2-135m-instruct")
def test_chat_pairs_in_a_hub_template_learn_the_reply_and_its_end_of_turn_only():
    from gptlib.corpus import PAD_TARGET
    from gptlib.hf_tokenizer import HubTokenizer
    from gptlib.template_pairs import TemplatePairBatches

    tokens = HubTokenizer.from_directory(SMOLLM2)
    pairs = [(f"question {i} 😀?", f"answer {i}, Привет") for i in range(10)]
    batches = TemplatePairBatches(pairs, tokens, seed=0)
    x, y = batches.batch_from(batches.rows["train"][:2], block_size=256)
    for row, (_, mine) in zip(y, batches.pairs["train"][:2]):
        learned = [int(t) for t in row if t != PAD_TARGET]
        assert tokens.decode(learned) == mine + "<|im_end|>"
    assert torch.equal(x[0, 1:][y[0, :-1] != PAD_TARGET], y[0, :-1][y[0, :-1] != PAD_TARGET])  # y is x shifted


@pytest.mark.slow  # compiling takes ~10-30 s a graph
def test_the_compiled_batched_engine_gives_transformers_greedy_tokens(tmp_path):
    """Qwen3's options together (grouped-query attention, QK-norm, a head size apart from the width,
    untied output) through the server's compiled Batcher, two replies side by side, rows 1 and 2."""
    reference = reference_model("qwen3", tmp_path)
    model = ours(tmp_path)
    prompts = [[5, 17, 3, 60, 2], [9, 1, 44]]
    with torch.no_grad():
        expected = [reference.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False, use_cache=True,
                                       pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    batcher = engine.Batcher(model, rows=2, compiled=True)
    try:
        streams = [batcher.submit(prompt, 24, temperature=0) for prompt in prompts]
        replies = [list(stream) for stream in streams]
    finally:
        batcher.close()
    assert replies == expected


def smollm2_chat_body(directory):
    """A tiny random Llama body with SmolLM2's real tokenizer and chat template: a hub directory."""
    import shutil
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**SHAPE, "vocab_size": 49152, "max_position_embeddings": 128},
                                      tie_word_embeddings=True, eos_token_id=2)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        shutil.copy(SMOLLM2 / name, directory / name)


@pytest.mark.slow  # six short runs and two exports on a 49,152-token vocabulary
@pytest.mark.skipif(SMOLLM2 is None, reason="no ../shared/data/smollm2-135m-instruct")
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_fine_tuning_a_hub_model_on_chat_pairs_resumes_exactly_and_exports_merged(lora_rank, tmp_path):
    import gpt_final_version
    import model_handler
    from gptlib.checkpoint import load_checkpoint
    from model_handler import ModelHandler

    smollm2_chat_body(tmp_path / "hub")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"input": f"lunch at {i}?", "output": f"yes, {i} is fine 😀"}) + "\n"
                             for i in range(24)), encoding="utf-8")

    def train(out, iters, *extra):
        gpt_final_version.main([f"--out={out}", f"--max_iters={iters}", "--notes=", "--sample_chars=0", "--progress=false",
                                "--device=cpu", "--eval_iters=1", *extra])

    common = [f"--init_from={tmp_path / 'hub'}", f"--data={pairs}", f"--lora_rank={lora_rank}", "--block_size=64",
              "--batch_size=2", "--eval_interval=3", "--learning_rate=3e-3", "--warmup_iters=1", "--lr_decay_iters=6"]
    train(tmp_path / "half.pt", 3, *common)
    train(tmp_path / "resumed.pt", 6, f"--resume={tmp_path / 'half.pt'}")
    train(tmp_path / "whole.pt", 6, *common)
    resumed, whole = load_checkpoint(str(tmp_path / "resumed.pt")), load_checkpoint(str(tmp_path / "whole.pt"))
    assert resumed["model"].keys() == whole["model"].keys() and resumed["iter_num"] == whole["iter_num"] == 6
    for name in whole["model"]:
        assert torch.equal(resumed["model"][name], whole["model"][name]), name
    assert ("lora" in whole) == bool(lora_rank)

    exported = tmp_path / "merged.pt"
    model_handler.main([str(tmp_path / "whole.pt"), f"--export={exported}", "--export_half=false", "--device=cpu"])
    plain = load_checkpoint(str(exported))
    assert "lora" not in plain and not any("lora_" in name for name in plain["model"])
    adapted, merged = ModelHandler(str(tmp_path / "whole.pt"), "cpu").load(), ModelHandler(str(exported), "cpu").load()
    assert merged.uses_chat_template  # the tokenizer and its template travel with the merged weights
    idx = torch.randint(0, 49152, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(merged.model(idx)[0], adapted.model(idx)[0], atol=1e-5, rtol=1e-5)
    reply = merged.reply("lunch at 3?", [], max_new_tokens=8, temperature=0)
    assert reply.text == adapted.reply("lunch at 3?", [], max_new_tokens=8, temperature=0).text
    model_handler.main([str(tmp_path / "whole.pt"), f"--export_hf={tmp_path / 'hf'}", "--device=cpu"])  # issue 27
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    with torch.no_grad():
        assert (theirs(idx).logits - adapted.model(idx)[0]).abs().max() < 1e-5
    if lora_rank:  # the adapters apart from their base, for PEFT (issue 27; tests/test_export_peft.py)
        peft = pytest.importorskip("peft")
        model_handler.main([str(tmp_path / "whole.pt"), f"--export_peft={tmp_path / 'peft'}", "--device=cpu"])
        base = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "peft" / "base"))
        over_base = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft" / "adapter")).eval()
        with torch.no_grad():
            assert (over_base(input_ids=idx).logits - adapted.model(idx)[0]).abs().max() < 1e-5
