"""Conversations in a pretrained model's own chat template (tokenizer_config.json's Jinja), rendered
in a sandbox as transformers renders them.

    text = render(tok, messages, add_generation_prompt=True)
    ids, learn = encode_conversation(tok, messages)   # learn: the assistant's tokens + end of turn
    ids = generation_prompt_ids(tok, messages)        # for serving
Imports nothing of ours but gptlib/errors.py.
"""
from __future__ import annotations

import json
from datetime import datetime

from gptlib.errors import UserError


def template_source(tokenizer) -> str:
    template = tokenizer.config.get("chat_template")
    if isinstance(template, list):  # named templates: the "default" one
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    if not template:
        raise UserError("tokenizer_config.json has no chat_template; use a chat (instruct) model's files.")
    return template


def compiled(source: str):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def render(tokenizer, messages, add_generation_prompt: bool = False, tools=None) -> str:
    """The template's text for these messages; a family without a system role gets it folded in."""
    from jinja2 import TemplateError
    template = compiled(template_source(tokenizer))
    facts = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
    try:
        return template.render(messages=list(messages), add_generation_prompt=add_generation_prompt, tools=tools, **facts)
    except TemplateError as error:
        if messages and messages[0].get("role") == "system":
            return render(tokenizer, fold_system(messages), add_generation_prompt, tools)
        raise UserError(f"tokenizer_config.json's chat_template refused the conversation ({error}); "
                        "check the roles alternate user/assistant.") from error


def fold_system(messages):
    """System prompt folded into the first user message, for templates with no system role."""
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{system}\n\n{message['content']}"
            break
    return rest


def encode_conversation(tokenizer, messages) -> tuple[list[int], list[bool]]:
    """Ids of the whole conversation and, per id, whether training learns it: an assistant's reply
    and its end-of-turn markup, found as what each assistant turn adds to the prompt before it."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        after = render(tokenizer, messages[:i + 1])
        if not text.startswith(after) or not after.startswith(before):
            raise UserError("the chat template does not render conversations as growing prefixes; "
                            "this model's template cannot mark assistant turns.")
        end = len(before) + after[len(before):].find(message["content"]) + len(message["content"])
        end_of_turn = after[end:]
        stop = end + len(end_of_turn.rstrip("\n")) if end_of_turn.strip() else end
        spans.append((len(before), stop))
    ids, offsets = tokenizer.encode_with_offsets(text)
    learn = [any(s <= a < e for s, e in spans) for a, _ in offsets]
    return ids, learn


def generation_prompt_ids(tokenizer, messages) -> list[int]:
    return tokenizer.encode_with_specials(render(tokenizer, messages, add_generation_prompt=True))


def strip_markup(tokenizer, reply: str) -> str:
    """A generated reply without the template's special tokens (end of turn included)."""
    for token in sorted(tokenizer.specials, key=len, reverse=True):
        reply = reply.replace(token, "")
    return reply.strip()


def reply_prompt_ids(tokens, message: str, history, system: str, block_size: int) -> list[int]:
    """The prompt ids of a conversation in a hub model's own chat template, with its generation
    prompt; the oldest exchanges go first until it fits the context (the newest message stays)."""
    history = list(history)
    while True:
        messages = [{"role": "system", "content": system}] if system else []
        for theirs, mine in history:
            messages += [{"role": "user", "content": theirs}, {"role": "assistant", "content": mine}]
        ids = generation_prompt_ids(tokens, messages + [{"role": "user", "content": message}])
        if len(ids) <= block_size or not history:
            return ids[-block_size:]
        history = history[1:]
