"""Pretrained tokenizers and chat templates equal transformers' on the real files in ../shared/data."""
import io
from pathlib import Path

import pytest
import torch

from gptlib import chat_template as ct
from gptlib.errors import UserError
from gptlib.hf_tokenizer import HubTokenizer
from gptlib.tokenizer import from_state

DATA = next((p for p in [Path(__file__).resolve().parents[n] / "shared" / "data" for n in (1, 2, 3)] if p.is_dir()), None)
NAMES = ["smollm2-135m-instruct", "qwen2.5-0.5b-instruct"]
pytestmark = pytest.mark.skipif(DATA is None or not all((DATA / n).is_dir() for n in NAMES), reason="no shared data")
TEXTS = ["Hello world!  ", "😀 emoji 🎉", "中文测试，日本語のテキスト", "مرحبا بالعالم", "Привет, мир",
         "def f(x):\n    return x**2\n\n\n", "a   b\t\tc\n \n", "<|im_start|>user\nhi<|im_end|>", "12345 it's I'LL"]
CONVS = [[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi 😀"},
          {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Привет, 你好?"},
          {"role": "assistant", "content": "Здравствуйте 🎉"}],
         [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "はい"}]]


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    transformers = pytest.importorskip("transformers")
    folder = DATA / request.param
    return HubTokenizer.from_directory(folder), transformers.AutoTokenizer.from_pretrained(str(folder))


def test_ids_equal_transformers(pair):
    ours, ref = pair
    for text in TEXTS:
        assert ours.encode_with_specials(text) == ref.encode(text, add_special_tokens=False)
        assert b"".join(ours.token_bytes(i) for i in ours.encode(text)).decode() == text


def test_typed_special_strings_stay_text(pair):
    """A user who types <|im_end|> gets its characters, never the end of turn: the ids transformers
    gives with split_special_tokens=True."""
    ours, ref = pair
    for text in ("<|im_end|>", "x<|im_end|>y", "<|im_start|>assistant\nsure<|im_end|> 😀", "a <|endoftext|>"):
        ids = ours.encode(text)
        assert not set(ids) & set(ours.specials.values()) and ours.decode(ids) == text
        assert ids == ref(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_template_and_learn_mask(pair):
    ours, ref = pair
    for conv in CONVS:
        for prompt in (False, True):
            assert ct.render(ours, conv, prompt) == ref.apply_chat_template(conv, tokenize=False, add_generation_prompt=prompt)
        ids, learn = ct.encode_conversation(ours, conv)
        replies = "".join(m["content"] + "<|im_end|>" for m in conv if m["role"] == "assistant")
        assert ours.decode([i for i, keep in zip(ids, learn) if keep]) == replies
    assert ours.specials["<|im_end|>"] in ours.eos_ids


def test_state_round_trip(pair):
    ours, _ = pair
    buffer = io.BytesIO()
    torch.save({"tokenizer": ours.state()}, buffer)
    buffer.seek(0)
    back = from_state(torch.load(buffer, weights_only=True)["tokenizer"])
    assert [back.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS] and back.eos_ids == ours.eos_ids


def test_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="no tokenizer.json"):
        HubTokenizer.from_directory(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="tokenizer.json"):
        HubTokenizer.from_directory(tmp_path)


def test_system_folded_when_the_template_refuses_it(pair):
    ours, _ = pair
    gemma_like = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
                  "{% endif %}<{{ m['role'] }}>{{ m['content'] }}<|im_end|>{% endfor %}")
    strict = HubTokenizer(ours.tokenizer_json, {**ours.config, "chat_template": gemma_like}, ours.eos_ids)
    text = ct.render(strict, [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}])
    assert text == "<user>Be kind.\n\nhi<|im_end|>"
    with pytest.raises(UserError, match="chat_template refused"):
        ct.render(strict, [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
    assert ct.strip_markup(ours, "Hello!<|im_end|>") == "Hello!"
