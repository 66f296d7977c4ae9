"""The chat model's report as files and as the line a run prints: Markdown, JSON, the style card's
picture (with matplotlib) and the summary. The numbers come from gptlib/persona_report.py; message
text appears only where the report was made with show_text."""
from __future__ import annotations

import json
from pathlib import Path

from gptlib.loss_curves import PLOT_INSTALL, matplotlib_available
from gptlib.style_card import CARD_ROWS, FAILURES, card_table, redacted

FAILURE_NAMES = {"empty": "empty reply", "loop": "loops (a phrase or stretch repeated)",
                 "overlong": "overlong (past the longest training reply, or cut at the cap)",
                 "markup": "template or marker text", "speaks_as_other": "speaks as someone else (\"Name: ...\")"}


def to_json(numbers: dict) -> str:
    return json.dumps(numbers, indent=2, ensure_ascii=False) + "\n"


def summary(numbers: dict, pictured: bool) -> str:
    """The lines a run or --report prints: numbers only, never message text."""
    held, bpb, fails = numbers["held_out"], numbers["bits_per_byte"], numbers["failures"]
    copies, files = numbers["memorisation"]["generated"], numbers["files"]
    split = f"{held['sessions']} newest sessions" if held["split"] == "time" else "the held-out tenth"
    failed = ", ".join(f"{name} {fails['generated'][name]}" for name in FAILURES if fails["generated"][name])
    return "\n".join([
        f"report: {held['replies']} held-out replies ({split}); bits/byte {bpb['model']:.4f} against "
        f"{bpb['start']:.4f} for {bpb['start_is']}: gain {bpb['gain']:+.4f}",
        f"report: {held['answered']} replies generated; {fails['generated']['any']} failed ({failed or 'none'}); "
        f"copies of >= {copies['min_words']} training words: {copies['copies']}/{copies['replies']}",
        f"report: {files['md']} and {files['json']} (numbers{' and text' if numbers['show_text'] else ' only'})"
        + (f", {files['png']}" if pictured else f" (no picture: {PLOT_INSTALL})"),
        f"report: blind test {files['html']}: holds message text (your conversations), written beside the "
        "checkpoint only; open it in a browser, nothing is sent anywhere",
    ])


def markdown(numbers: dict, pictured: bool) -> str:
    held, gen, bpb = numbers["held_out"], numbers["generation"], numbers["bits_per_byte"]
    style, fails, memo, files = numbers["style"], numbers["failures"], numbers["memorisation"], numbers["files"]
    split = (f"the newest {held['sessions']} sessions (held out by time, as training held them out)"
             if held["split"] == "time" else "the held-out tenth of the pairs (the split training used)")
    seen = f"up to {gen['context_turns']}" if gen["context_turns"] else "all"
    lines = [f"# Report: {Path(numbers['checkpoint']).name}", "",
             f"Measured on {held['replies']} replies of {split} of `{numbers['data']}`, which the model never trained "
             f"on ({held['training_replies']} training replies). Bits per byte on {held['scored']} of them; the model "
             f"answered {held['answered']} (temperature {gen['temperature']:g}, at most {gen['max_new_tokens']} tokens, "
             f"seed {gen['seed']}, {seen} turns of conversation seen).", "",
             "## Bits per byte of the held-out replies", "",
             "| model | bits per byte |", "| --- | --- |",
             f"| this checkpoint | {bpb['model']:.4f} |", f"| {bpb['start_is']} | {bpb['start']:.4f} |", "",
             f"Gain: {bpb['gain']:+.4f} bits per byte (lower is better; the end of each reply counts as one byte).", "",
             "## Style card: your replies against the model's, for the same conversations", "",
             "| | yours | the model's |", "| --- | --- | --- |"]
    lines += [f"| {label} | {real} | {made} |" for label, real, made in card_table(style["real"], style["generated"])]
    overlap = style["overlap"]
    lines += ["", f"Vocabulary: {overlap['jaccard']:.0%} of the words used on either side are used on both; "
              f"{overlap['generated_words_in_real_vocabulary']:.0%} of the model's words are words you used here; "
              f"{overlap['shared_top_words']} of your {overlap['top']} most frequent words are among its {overlap['top']}; "
              f"{style['identical_share']:.0%} of its replies are exactly yours."]
    if "frequent" in style:
        for side, name in (("real", "yours"), ("generated", "the model's")):
            for kind in ("words", "emoji"):
                listed = ", ".join(f"{w} ({n})" for w, n in style["frequent"][side][kind]) or "none"
                lines.append(f"- most frequent {kind}, {name}: {listed}")
    else:
        lines.append("(The words themselves are left out: --show_text=true lists the most frequent words and emoji.)")
    if pictured:
        lines += ["", f"![style card]({Path(files['png']).name})"]
    else:
        lines += ["", f"(No picture of the style card: matplotlib is not installed; {PLOT_INSTALL}.)"]
    lines += ["", f"## Failures, of {fails['replies']} replies", "", "| failure | yours | the model's |",
              "| --- | --- | --- |"]
    lines += [f"| {FAILURE_NAMES[f]} | {fails['real'][f]} | {fails['generated'][f]} |" for f in FAILURES]
    lines.append(f"| any of these | {fails['real']['any']} | {fails['generated']['any']} |")
    made, real = memo["generated"], memo["real"]
    lines += ["", "## Memorisation", "",
              f"Replies that repeat at least {made['min_words']} words in a row of a training reply: the model's "
              f"{made['copies']} of {made['replies']} ({made['share']:.0%}); yours {real['copies']} of {real['replies']} "
              "(people repeat themselves: this is the floor to compare with).", ""]
    if made["worst"]:
        lines += ["| reply | words copied in a row | its words | its characters |" + (" text |" if numbers["show_text"] else ""),
                  "| --- | --- | --- | --- |" + (" --- |" if numbers["show_text"] else "")]
        for copy in made["worst"]:
            text = f" {copy['text']} |" if "text" in copy else ""
            lines.append(f"| {copy['reply']} | {copy['copied_words']} | {copy['reply_words']} | {copy['reply_chars']} |{text}")
        if not numbers["show_text"]:
            lines.append(f"\n(Text redacted to its length, as {redacted('an example')} shows one; --show_text=true shows it.)")
    lines += ["", "## Blind test", "",
              f"`{Path(files['html']).name}`, beside the checkpoint: {numbers['blind_test']['conversations']} of these "
              "conversations (one a session: a later one would show an earlier one's answer) with two "
              "replies each in random order, yours and the model's. Pick the one you wrote; the page scores it in the "
              "browser (about half right means the model's replies pass for yours). It holds message text and stays "
              "in this folder: share it with no one you would not show the chats to.", "",
              "## What these numbers cannot show", "",
              "They compare replies to the same conversations; they say nothing of whether a reply is true, kind or "
              "what you would have meant. A few dozen replies give rough shares (one reply is several percent). Bits "
              "per byte rewards predicting your usual words, which a model can do without sounding like you.", ""]
    return "\n".join(lines)


def draw_style_card(numbers: dict, path) -> bool:
    """The style card in one chart: for each measure a bar for yours and one for the model's, the
    longer of the two full length, the values written at their ends (one axes: a tenth of the cost of
    a chart per measure). False, writing nothing, without matplotlib."""
    if not matplotlib_available():
        return False
    from matplotlib.figure import Figure

    real, made = numbers["style"]["real"], numbers["style"]["generated"]
    figure = Figure(figsize=(8, 4.2), dpi=100)
    axes = figure.add_subplot()
    for row, (key, _, fmt) in enumerate(CARD_ROWS):
        top = max(real[key], made[key]) or 1.0
        for offset, value, color in ((-0.2, real[key], "C0"), (0.2, made[key], "C1")):
            axes.barh(row + offset, value / top, height=0.38, color=color)
            axes.text(value / top + 0.01, row + offset, fmt.format(value), va="center", fontsize=7)
    axes.set_yticks(range(len(CARD_ROWS)), [label for _, label, _ in CARD_ROWS], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.25)
    axes.set_xticks([])
    figure.legend(handles=axes.patches[:2], labels=["yours", "the model's"], fontsize=8, loc="upper left",
                  bbox_to_anchor=(0.34, 0.95), ncols=2, frameon=False)
    figure.suptitle(f"{Path(numbers['checkpoint']).name}: style of {numbers['held_out']['answered']} held-out replies",
                    fontsize=10)
    figure.subplots_adjust(left=0.34, right=0.98, top=0.88, bottom=0.04)
    figure.savefig(path)
    return True
