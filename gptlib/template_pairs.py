"""Chat pairs for a hub chat model (SmolLM2, Qwen...), laid out in the model's own chat template.

Each pair (their message, my reply) becomes a user turn and an assistant turn, rendered by the
template of tokenizer_config.json (gptlib/chat_template.py); training learns the reply and the
end-of-turn token only, as PairBatches learns ours and our END marker. The template's markup before
the reply, the user's words and the padding are never targets.
"""
from __future__ import annotations

import torch

from gptlib.chat_template import encode_conversation, generation_prompt_ids
from gptlib.corpus import PairBatches
from gptlib.errors import UserError


class TemplatePairBatches(PairBatches):
    """PairBatches whose rows are rendered in a hub model's chat template."""

    def encode_pair(self, their: str, mine: str) -> tuple[torch.Tensor, int]:
        """The pair's ids (up to its last learned token, the end of turn) and the index of the first learned one."""
        messages = [{"role": "user", "content": their}, {"role": "assistant", "content": mine}]
        ids, learn = encode_conversation(self.vocab, messages)
        if True not in learn:
            raise UserError("the model's chat template left no assistant tokens to learn; check tokenizer_config.json.")
        first, last = learn.index(True), len(learn) - learn[::-1].index(True)
        return torch.tensor(ids[:last], dtype=torch.long), first

    def reply_prompt(self, their: str) -> tuple[list[int], tuple[int, ...]]:
        """The prompt ids that ask for my reply to `their`, and the ids that end it."""
        return generation_prompt_ids(self.vocab, [{"role": "user", "content": their}]), tuple(self.vocab.eos_ids)

    def padding_id(self) -> int:
        return self.vocab.eos_ids[0]

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of the replies (the end of turn counted as one byte) per learned token."""
        pairs, rows = self.pairs[split], self.rows[split]
        return sum(len(mine.encode("utf-8")) + 1 for _, mine in pairs) / max(1, sum(len(ids) - first for ids, first in rows))
