"""Chat pairs for a hub chat model (SmolLM2, Qwen...), laid out in the model's own chat template.

Each pair (their message, my reply) becomes a user turn and an assistant turn, rendered by the
template of tokenizer_config.json (gptlib/chat_template.py); training learns the reply and the
end-of-turn token only, as PairBatches learns ours and our END marker. The template's markup before
the reply, the user's words and the padding are never targets.
"""
from __future__ import annotations

import torch

from gptlib.chat_format import read_laid_out
from gptlib.chat_template import encode_conversation, generation_prompt_ids
from gptlib.corpus import PairBatches
from gptlib.errors import UserError


class TemplatePairBatches(PairBatches):
    """PairBatches whose rows are rendered in a hub model's chat template: a conversation's earlier
    exchanges as user and assistant turns (I am the assistant), after the persona's system prompt."""

    def __init__(self, pairs, vocab, seed: int = 0, laid_out: bool = False, split: dict | None = None,
                 system: str = ""):
        self.system = system  # set before PairBatches encodes the pairs
        super().__init__(pairs, vocab, seed, laid_out, split)

    def messages(self, their: str) -> list[dict]:
        """The conversation before my reply, as chat messages (their side may be a laid-out conversation)."""
        message, history = read_laid_out(their) if self.laid_out else (their, [])
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for theirs, mine in history:
            messages += [{"role": "user", "content": theirs}, {"role": "assistant", "content": mine}]
        return messages + [{"role": "user", "content": message}]

    def encode_pair(self, their: str, mine: str) -> tuple[torch.Tensor, int]:
        """The pair's ids (up to its last learned token, the end of turn) and the index of the first
        learned one: the reply's, the last assistant turn (the earlier ones are context here)."""
        ids, learn = encode_conversation(self.vocab, self.messages(their) + [{"role": "assistant", "content": mine}])
        if True not in learn:
            raise UserError("the model's chat template left no assistant tokens to learn; check tokenizer_config.json.")
        last = len(learn) - learn[::-1].index(True)
        first = last
        while first > 0 and learn[first - 1]:
            first -= 1
        return torch.tensor(ids[:last], dtype=torch.long), first

    def reply_prompt(self, their: str) -> tuple[list[int], tuple[int, ...]]:
        """The prompt ids that ask for my reply to `their`, and the ids that end it."""
        return generation_prompt_ids(self.vocab, self.messages(their)), tuple(self.vocab.eos_ids)

    def padding_id(self) -> int:
        return self.vocab.eos_ids[0]

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of the replies (the end of turn counted as one byte) per learned token."""
        pairs, rows = self.pairs[split], self.rows[split]
        return sum(len(mine.encode("utf-8")) + 1 for _, mine in pairs) / max(1, sum(len(ids) - first for ids, first in rows))
