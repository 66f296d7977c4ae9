"""The blind test: one self-contained HTML page (no network, nothing loaded from elsewhere) that
shows held-out conversations, each with two replies in random order, the person's own and the
model's. The person picks the one they wrote; the page scores it locally, in the browser.

    page = blind_page([{"context": [("them", "pasta or curry?")], "real": "curry please",
                        "model": "pasta please"}], seed=1)

The page holds message text by necessity: the report writes it beside the checkpoint only and says so.
"""
from __future__ import annotations

import html
import json
import random

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
.item { border: 1px solid #ccc; border-radius: 8px; padding: .8rem 1rem; margin: 1rem 0; }
.turn { margin: .15rem 0; white-space: pre-wrap; } .who { color: #777; font-size: 85%; margin-right: .4rem; }
.choices { display: flex; gap: .6rem; margin-top: .6rem; }
.choice { flex: 1; text-align: left; padding: .5rem .7rem; border: 1px solid #888; border-radius: 6px;
          background: #f7f7f7; font: inherit; white-space: pre-wrap; cursor: pointer; }
.choice:disabled { cursor: default; } .mine { border: 2px solid #2a7; } .picked { background: #e8f0ff; }
.verdict { margin-top: .4rem; font-size: 90%; color: #555; }
#score { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ddd; font-weight: 600; }
"""

SCRIPT = """
const items = JSON.parse(document.getElementById("items").textContent);
const score = document.getElementById("score");
let answered = 0, right = 0;
function show() {
  const coin = (items.length / 2).toFixed(1);
  score.textContent = answered < items.length
    ? `answered ${answered} of ${items.length}; you picked your own reply in ${right}`
    : `done: you picked your own reply in ${right} of ${items.length} (guessing would get about ${coin})`;
}
function turn(who, text) {
  const line = document.createElement("div"); line.className = "turn";
  const name = document.createElement("span"); name.className = "who"; name.textContent = who;
  line.append(name, document.createTextNode(text)); return line;
}
items.forEach((item, n) => {
  const box = document.createElement("div"); box.className = "item"; box.dataset.index = n;
  item.context.forEach(([who, text]) => box.append(turn(who, text)));
  const row = document.createElement("div"); row.className = "choices";
  const verdict = document.createElement("div"); verdict.className = "verdict";
  const buttons = item.replies.map((text, side) => {
    const button = document.createElement("button"); button.className = "choice"; button.textContent = text;
    button.dataset.side = side;
    button.onclick = () => {
      buttons.forEach(b => { b.disabled = true; });
      button.classList.add("picked"); buttons[item.real].classList.add("mine");
      answered += 1; if (side === item.real) right += 1;
      verdict.textContent = side === item.real ? "yes: that one is yours" : "no: that one is the model's";
      show();
    };
    return button;
  });
  row.append(...buttons); box.append(row, verdict); document.getElementById("list").append(box);
});
show();
"""


def blind_items(examples: list[dict], seed: int = 0) -> list[dict]:
    """Each example's two replies in a random order (seeded), and which of them is the real one."""
    shuffle = random.Random(seed)
    items = []
    for example in examples:
        real_first = shuffle.random() < 0.5
        replies = [example["real"], example["model"]] if real_first else [example["model"], example["real"]]
        items.append({"context": [list(turn) for turn in example["context"]], "replies": replies,
                      "real": 0 if real_first else 1})
    return items


def blind_page(examples: list[dict], seed: int = 0, title: str = "Which reply did you write?") -> str:
    """The whole page as one string: styles, data and script inline, so it opens from a file."""
    data = json.dumps(blind_items(examples, seed), ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # no "</script>" inside a message can end the data block
    heading = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{heading}</title><style>{STYLE}</style></head>
<body><h1>{heading}</h1>
<p>Each conversation below is one you had, from the held-out part of your chats that the model never trained on.
One reply is the one you wrote, the other the model's, in random order. Pick yours; the score is kept on this
page only and sent nowhere.</p>
<div id="score"></div><div id="list"></div>
<script type="application/json" id="items">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""
