"""OpenAI's answers: the choices of one request (each a reply of the model, ended early at a stop
sequence), usage in the model's tokens, and the shapes of a chat and a text completion, whole and
as server-sent events. No sockets: serving/server.py writes what these make.

A stop sequence may arrive split over several pieces of text (a BPE token can hold half of it, a
character model gives it one character at a time), so a stream holds back the end of the text that
could still begin one, and sends it once it cannot.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator


def json_bytes(payload) -> bytes:
    """UTF-8 JSON; a lone surrogate a client sent goes back as its escape, not a dropped connection (fuzzing)."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "backslashreplace")


# ==============================================================================================
# The choices of a request


class StopText:
    """Text in pieces, cut before the first stop sequence: push() gives the text that can go out now
    and whether a stop sequence has come (then nothing after it is given)."""

    def __init__(self, stops: list[str]):
        self.stops, self.held = stops, ""

    def push(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            return piece, False
        text = self.held + piece  # a stop sequence begins in what was held or in the new piece, never earlier
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        if found:
            self.held = ""
            return text[:min(found)], True
        keep = self._could_begin_a_stop(text)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    def flush(self) -> str:
        """What was held back, once the reply has ended without a stop sequence."""
        rest, self.held = self.held, ""
        return rest

    def _could_begin_a_stop(self, text: str) -> int:
        """The length of the longest end of `text` that a stop sequence begins with."""
        for length in range(min(len(text), max(map(len, self.stops)) - 1), 0, -1):
            end = text[-length:]
            if any(stop.startswith(end) for stop in self.stops):
                return length
        return 0


class Choice:
    """One reply of a request: the model's text as it is made (a tokenizer.TextStream), ended
    early at a stop sequence, which is not part of it. `echo` is text shown before the reply (the
    prompt, for a completion that asks for it)."""

    def __init__(self, index: int, stream, stops: list[str], echo: str = ""):
        self.index, self.stream, self.echo = index, stream, echo
        self.stop = StopText(stops)
        self.parts: list[str] = []
        self.finish_reason: str | None = None

    def pieces(self) -> Iterator[str]:
        """The reply's text as it comes; finish_reason is set once it ends."""
        pieces = iter(self.stream)
        for piece in pieces:
            text, stopped = self.stop.push(piece)
            if text:
                self.parts.append(text)
                yield text
            if stopped:
                pieces.close()  # the engine stops this reply (a batched one leaves its row at the next step)
                self.finish_reason = "stop"
                return
        if rest := self.stop.flush():
            self.parts.append(rest)
            yield rest
        self.finish_reason = self.stream.completion().finish_reason

    @property
    def text(self) -> str:
        return "".join(self.parts)


def interleaved(choices: list[Choice]) -> Iterator[tuple[Choice, str | None]]:
    """Each piece of every choice as it is made, as (choice, piece); (choice, None) when one ends.
    One choice is read right here; several are read side by side, a thread each (a batched server
    decodes them in one batch)."""
    if len(choices) == 1:
        for piece in choices[0].pieces():
            yield choices[0], piece
        yield choices[0], None
        return
    arrived: queue.SimpleQueue = queue.SimpleQueue()
    leaving = threading.Event()  # the reader is gone (a client that hung up): the choices stop

    def read(choice: Choice) -> None:
        try:
            for piece in choice.pieces():
                if leaving.is_set():
                    return
                arrived.put((choice, piece))
            arrived.put((choice, None))
        except BaseException as error:  # noqa: BLE001 - raised again by the reader
            arrived.put((choice, error))

    for choice in choices:
        threading.Thread(target=read, args=(choice,), name=f"choice-{choice.index}", daemon=True).start()
    try:
        for _ in range(len(choices)):
            while True:
                choice, piece = arrived.get()
                if isinstance(piece, BaseException):
                    raise piece
                yield choice, piece
                if piece is None:
                    break
    finally:
        leaving.set()


def usage(choices: list[Choice], choices_per_prompt: int) -> dict:
    """OpenAI's usage in the model's own tokens (characters, BPE or GPT-2's; the chat layout's
    markers included): each prompt counted once, every choice's generated tokens."""
    prompt = sum(c.stream.prompt_tokens for c in choices if c.index % choices_per_prompt == 0)
    completion = sum(c.stream.generated for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# ==============================================================================================
# The shapes of the answers


class ChatShape:
    """/v1/chat/completions: a chat.completion, or chat.completion.chunk events with deltas."""

    whole_object, chunk_object, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl-"

    @staticmethod
    def whole(choice: Choice) -> dict:
        return {"index": choice.index, "message": {"role": "assistant", "content": choice.text},
                "logprobs": None, "finish_reason": choice.finish_reason}

    @staticmethod
    def opening(choice: Choice) -> dict:
        return {"index": choice.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}

    @staticmethod
    def piece(index: int, text: str) -> dict:
        return {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}

    @staticmethod
    def closing(choice: Choice) -> dict:
        return {"index": choice.index, "delta": {}, "logprobs": None, "finish_reason": choice.finish_reason}


class TextShape:
    """/v1/completions (OpenAI's legacy completions): a text_completion, whole or in chunks."""

    whole_object, chunk_object, id_prefix = "text_completion", "text_completion", "cmpl-"

    @staticmethod
    def whole(choice: Choice) -> dict:
        return {"index": choice.index, "text": choice.echo + choice.text, "logprobs": None,
                "finish_reason": choice.finish_reason}

    @staticmethod
    def opening(choice: Choice) -> dict:
        return TextShape.piece(choice.index, choice.echo)  # the prompt, with echo; else empty

    @staticmethod
    def piece(index: int, text: str) -> dict:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": None}

    @staticmethod
    def closing(choice: Choice) -> dict:
        return {"index": choice.index, "text": "", "logprobs": None, "finish_reason": choice.finish_reason}


class Answer:
    """One answer's id, time and model, and its body: whole, or event by event."""

    def __init__(self, shape, model: str, include_usage: bool = False):
        self.shape, self.include_usage = shape, include_usage
        self.head = {"id": shape.id_prefix + uuid.uuid4().hex, "object": shape.whole_object,
                     "created": int(time.time()), "model": model}
        self._piece_templates: dict[int, tuple[bytes, bytes]] = {}

    def whole(self, choices: list[Choice], choices_per_prompt: int) -> dict:
        return self.head | {"choices": [self.shape.whole(c) for c in choices],
                            "usage": usage(choices, choices_per_prompt)}

    def event(self, choices: list[dict], extra: dict | None = None) -> bytes:
        chunk = self.head | {"object": self.shape.chunk_object, "choices": choices}
        if self.include_usage:  # as OpenAI: every chunk says usage, null until the last
            chunk["usage"] = None
        return b"data: " + json_bytes(chunk | (extra or {})) + b"\n\n"

    def piece_event(self, index: int, text: str) -> bytes:
        """The event of one piece of text: the chunk's JSON is made once per choice, the text put in
        (one small json.dumps per piece, not the whole chunk's)."""
        if index not in self._piece_templates:
            before, after = self.event([self.shape.piece(index, _PLACEHOLDER)]).split(json_bytes(_PLACEHOLDER))
            self._piece_templates[index] = before, after
        before, after = self._piece_templates[index]
        return before + json_bytes(text) + after

    def usage_event(self, choices: list[Choice], choices_per_prompt: int) -> bytes:
        return self.event([], {"usage": usage(choices, choices_per_prompt)})


_PLACEHOLDER = "\x00piece\x00"  # marks where the text goes in a template (no model name holds a NUL)
DONE = b"data: [DONE]\n\n"
