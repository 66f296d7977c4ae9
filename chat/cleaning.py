"""Cleaning: each rule counts the messages it changed or dropped."""
from __future__ import annotations

import re
from collections import Counter

from .model import INVISIBLE
from .options import ChatDataConfig
from .scrub import Scrubber, redaction_terms

_MEDIA = re.compile(
    r"<Media omitted>|<attached: [^>\n]*>|<This message was edited>|\ufffc"
    r"|^(?:.*\s)?(?:image|video|audio|sticker|GIF|document|Contact card|media) omitted$"
    r"|^(?:This message was deleted|You deleted this message|null|Waiting for this message\. This may take a while)\.?$"
    r"|^.+ sent (?:an attachment|a photo|a video|a sticker|a GIF|a voice message|\d+ photos)\.$"
    r"|^(?=\S*/Attachments/\S)\S+$"
    r"|^(?=[\w.-]*/)[\w./-]+\.(?:jpe?g|heic|png|gif|mov|mp4|m4a|caf|pdf|webp|vcf|opus|mp3|aac|amr)$"  # a relative path
    r"|^.{1,60} (?:unsent|deleted) a message\.?$"
    r"|^.{1,60} (?:csatolt fájlt küldött|hat einen Anhang gesendet|envió un archivo adjunto|enviou um anexo"
    r"|a envoyé une pièce jointe|ha inviato un allegato|heeft een bijlage verzonden)\.$",
    re.IGNORECASE | re.MULTILINE)  # (linear on a huge line)
# Calls and notices the apps write as if they were messages (iOS, Messenger, Instagram, DiscordChatExporter CSV).
CALL_RECORD = re.compile(
    r"(?:Missed |Silenced |Cancelled )?(?:Group )?(?:Voice|Video|Audio|WhatsApp) call"
    r"(?:[,.] ?(?:\d+ (?:sec|secs|min|mins|hr|hrs|hour|hours|seconds|minutes)|No answer|Tap to call back|Declined|"
    r"Unanswered|Missed|Cancelled|Busy|Ended|Answered on other device)\.?)*"
    r"|.{1,60} (?:started a (?:call|video chat|voice call|video call)|missed your call|joined the (?:call|video chat))\.?"
    r"|(?:The (?:call|video chat) ended|You missed a call from .{1,60})\.?"
    r"|Started a call(?: that lasted \d+ (?:seconds?|minutes?|hours?))?\.?", re.IGNORECASE)
_GROUP_NOTICE = re.compile(
    r"(?:You|.{1,60}) (?:changed the group photo|removed the group photo|changed the chat theme|changed the theme to .{1,60}"
    r"|set the emoji to .{1,20}|set the quick reaction to .{1,20}|named the group .{1,100}\.(?=$)|changed the group name to .{1,100}\.(?=$)"
    r"|removed the group name|set (?:the|your|his|her|their) nickname (?:for .{1,60} )?to .{1,60}|set the nickname for .{1,60}"
    r"|set (?:your|his|her|their) own nickname to .{1,60}|cleared (?:the|your|his|her|their) nickname.{0,60}"
    r"|added .{1,60} to the group|removed .{1,60} from the group|left the group|created the group.{0,100}"
    # Messenger's poll notices: created, voted, changed or removed a vote, added or removed an option
    r"|created (?:a|the) poll(?:: .{1,300})?|(?:voted|removed (?:their |his |her |your )?vote) for .{1,300} in the poll.{0,300}"
    r"|changed (?:their|his|her|your) vote to .{1,300}|(?:added|removed) (?:the )?(?:an )?(?:option )?.{1,300} (?:to|from) the poll.{0,300}"
    r"|ended the poll.{0,300}"
    r"|(?:pinned|unpinned) a message|turned (?:on|off) disappearing messages|is now an admin)\.?"
    r"|This poll is no longer available\.?|The poll .{1,300} (?:has )?ended\.?"
    r"|(?:Joined the server|Pinned a message|Started a thread|Boosted the server|Changed the channel icon)[.!]?.{0,80}"
    r"|(?:Added|Removed) .{1,60} (?:to|from) the group\.?|Left the group\.?|Changed the channel name: .{1,100}",
    re.IGNORECASE)
# WhatsApp's polls: "POLL:\nDinner?\nOPTION: Pizza (1 vote)\nOPTION: Sushi (0 votes)" in any language
# ("ENCUESTA:" / "OPCIÓN: ... (2 votos)", "UMFRAGE:" / "(2 Stimmen)"): capitals, a colon, options with counts.
_POLL = re.compile(r"([^\W\d_]{3,12}):\n[^\n]{1,300}(?:\n([^\W\d_]{3,10}): [^\n]{0,300} \(\d+ [^\W\d_]{3,10}\))+\n?")
_TAPBACK = "(?:Loved|Liked|Disliked|Laughed at|Emphasized|Emphasised|Questioned)"
_REACTION = re.compile(
    _TAPBACK + r" (?:[“\"].*[”\"]|an? (?:image|photo|video|movie|attachment|audio message|sticker|GIF|message))"
    r"|(?:Reacted|Removed) .{1,20} (?:to|from) [“\"].*[”\"]"
    r"|(?i:.{0,60}\breacted\b.{0,20}\bto (?:your|a|their|his|her) message\.?)"
    r"|Liked a message"
    r"|(?i:.{0,60}\b(?:reaccionó|reaccionaste)\b.{0,20}\ba (?:tu|su|un) mensaje\.?)"  # the same in other languages
    r"|(?i:.{0,60}\b(?:reagiu|reagiste|reagi)\b.{0,20}\b(?:(?:à|a) )?(?:sua|tua|uma) mensagem\.?)"
    r"|(?i:.{0,60}\b(?:hat|hast)\b.{0,20}\bauf (?:deine|eine|seine|ihre) Nachricht reagiert\.?)"
    r"|(?i:.{0,60}\b(?:a réagi|avez réagi|as réagi)\b.{0,20}\bà (?:votre|ton|un|son) message\.?)"
    r"|(?i:.{0,60}\b(?:ha reagito|hai reagito)\b.{0,20}\bal (?:tuo|suo|un) messaggio\.?)"
    r"|(?i:.{0,60}\b(?:heeft|hebt|reageerde)\b.{0,30}\bop (?:je|jouw|een|zijn|haar) bericht(?: gereageerd)?\.?)"
    r"|(?i:(?:.{0,60} )?(?:le gustó un mensaje|curtiu uma mensagem|a aimé un message|vond een bericht leuk)\.?)",
    re.DOTALL)
_LINK = re.compile(r"(?:https?://|www\.)\S*[^\s.,!?;:)\]'\"”’>]", re.IGNORECASE)
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF\uFE0E\uFE0F\u200D\u20E3"
                    "\U000E0020-\U000E007F]")
_REPEATS = re.compile(r"(\D)\1{3,}")  # not digits: 1000000 is a number, not an exclamation
RULES = ("duplicate messages dropped", "before --since", "outside --top_contacts", "control/invisible characters removed", "reactions dropped",
         "call records dropped", "group/server notices dropped", "media placeholders removed", "links replaced", "private details scrubbed", "messages dropped by --redact", "emoji removed",
         "lowercased", "repeats squeezed", "messages empty after cleaning", "pairs empty after cleaning",
         "replies outside --reply_window", "turns ended by --silence_hours")


class Cleaner:
    """Applies the cleaning options to one text at a time and counts what each rule did."""

    def __init__(self, config: ChatDataConfig, counts: Counter):
        self.config = config
        self.counts = counts
        redact = redaction_terms(config.redact, config.redact_file)
        self.scrubber = Scrubber(config.region, redact, counts, config.scrub_private, config.redact_drop)

    def clean(self, text: str) -> str:
        """The text as it will be learned, or "" when a rule drops it whole."""
        config = self.config
        text = str(text).replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
        text = self._rule("control/invisible characters removed", INVISIBLE.sub("", text), text)
        if config.drop_reactions and _REACTION.fullmatch(text.strip()):
            self.counts["reactions dropped"] += 1
            return ""
        if config.drop_media and CALL_RECORD.fullmatch(text.strip()):
            self.counts["call records dropped"] += 1
            return ""
        if config.drop_media and (_GROUP_NOTICE.fullmatch(text.strip()) or _is_poll(text.strip())):
            self.counts["group/server notices dropped"] += 1
            return ""
        if config.drop_media:
            text = self._remove("media placeholders removed", _MEDIA, text)
        if config.replace_links:
            text = self._rule("links replaced", _LINK.sub("link", text), text)
        if config.scrub_private or self.scrubber.redact:
            scrubbed = self.scrubber(text)
            if scrubbed is None:
                self.counts["messages dropped by --redact"] += 1
                return ""
            text = self._rule("private details scrubbed", scrubbed, text)
        if config.drop_emoji:
            text = self._remove("emoji removed", _EMOJI, text)
        if config.lowercase:
            text = self._rule("lowercased", text.lower(), text)
        if config.squeeze_repeats:
            text = self._rule("repeats squeezed", _REPEATS.sub(r"\1\1\1", text), text)
        text = text.strip()
        if not text:
            self.counts["messages empty after cleaning"] += 1
        return text

    def _rule(self, name: str, new: str, old: str) -> str:
        if new != old:
            self.counts[name] += 1
        return new

    def _remove(self, name: str, pattern: re.Pattern, text: str) -> str:
        if not pattern.search(text):
            return text
        self.counts[name] += 1
        return _tidy_spaces(pattern.sub("", text))


def _is_poll(text: str) -> bool:
    match = _POLL.fullmatch(text)
    return bool(match) and match.group(1).isupper() and match.group(2).isupper()


def _tidy_spaces(text: str) -> str:
    """Removing a word from the middle of a line leaves two spaces, or a space at a line's end."""
    return re.sub(r"[ \t]*\n[ \t]*", "\n", re.sub(r"[ \t]{2,}", " ", text)).strip()
