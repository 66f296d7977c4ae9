"""WhatsApp: "12/31/23, 9:41 PM - Name: text" (Android), "[31/12/2023, 21:41:05] Name: text" (iOS), and the
other headers phones write in other locales ("13.6.2018 klo 21.25.15 - ", "13. 6. 2018. 21:25:15 ", "2022/12/14, 13:34. - ")."""
from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

from .cleaning import CALL_RECORD
from .model import (
    INVISIBLE,
    MALFORMED,
    MEDIA_PLACEHOLDER,
    Conversation,
    Imported,
    Message,
    clean_name,
)
from .options import ChatDataConfig

# A header: date (day, month, year in some order; "13. 6. 2018." too), an optional word ("klo"), the
# time (":" or "." between, maybe seconds, maybe "p. m."), then " - " (Android), "] " (iOS), ": " or a space.
_DATE = r"(\d{1,4})[./-]\s?(\d{1,2})[./-]\s?(\d{1,4})\.?"
_TIME = r"(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?\.?(?:\s*([AaPp])\.?\s?[Mm]\.?)?"
_HALF_BEFORE = {"오전": "a", "上午": "a", "午前": "a", "오후": "p", "下午": "p", "午後": "p"}  # ko, zh, ja: before the time
_HEADER = re.compile(r"\[?" + _DATE + r",?\s+(?:klo\s+|kl\.\s+|um\s+|à\s+|at\s+)?"
                     + r"(?:(" + "|".join(_HALF_BEFORE) + r")\s?)?" + _TIME
                     + r"(?:\]\s?|\s*[-–]\s|:\s|\s|$)(.*)", re.DOTALL)
# Starts like a header (a date, then a time): if the whole line is not one, it is malformed, never text.
_HEADER_LIKE = re.compile(r"\[?\d{1,4}[./-]\s?\d{1,2}[./-]\s?\d{2,4}\.?,?\s+(?:[^\W\d_]{1,4}\.?\s+)?\d{1,2}[:.]\d{0,2}(?:[:.]\d{0,2})?"
                          r"(?![\d,;\t])")  # not a CSV row that starts with a time
_CUT_OFF = re.compile(r"\[?\d{1,4}[./-][\d\s./,:\-–\[\]APMapm]*")  # a header cut short at the end of the file

# WhatsApp's own texts. The format marks many itself: on Android they come in <angle brackets>
# ("<Medien ausgeschlossen>", "<Mensagem editada>"), on iOS they start with U+200E; these rules work in
# any language. The lists below catch the rest in the languages seen in real exports.
_BRACKETED = re.compile(r"<[^<>\n]{3,60}>")
_EDIT_MARK = re.compile(r"\s*\u200e?<[^<>\n]{3,60}>\s*$")
_ATTACHED_FILE = re.compile(r"(?:[A-Z]{3}-\d{8}-WA\d{4,}|[^\n]{0,80})\.[A-Za-z0-9]{2,5} \([^()\n]{3,40}\)")
_MEDIA_WORDS = re.compile(
    r"(?:image|video|audio|sticker|GIF|document|Contact card|media) omitted"
    r"|(?:Bild|Video|Audio|Sticker|GIF|Dokument|Kontaktkarte) weggelassen"
    r"|(?:imagen|video|audio|sticker|GIF|documento|tarjeta de contacto) omitid[oa]"
    r"|(?:imagem|vídeo|áudio|figurinha|sticker|GIF|documento) (?:ocultad[oa]|omitid[oa])"
    r"|(?:image|vidéo|audio|autocollant|sticker|GIF|document) (?:absente?|omise?)"
    r"|(?:immagine|video|audio|sticker|GIF|documento) omess[oa]"
    r"|(?:afbeelding|video|audio|sticker|GIF|document) weggelaten", re.IGNORECASE)
_DELETED = re.compile(
    r"This message was deleted|You deleted this message|Diese Nachricht wurde gelöscht|Du hast diese Nachricht gelöscht"
    r"|Se eliminó este mensaje|Eliminaste este mensaje|Este mensaje fue eliminado|Mensagem apagada"
    r"|Esta mensagem foi apagada|Você apagou esta mensagem|Apagaste esta mensagem|Ce message a été supprimé"
    r"|Vous avez supprimé ce message|Questo messaggio è stato eliminato|Hai eliminato questo messaggio"
    r"|Dit bericht is verwijderd|Je hebt dit bericht verwijderd|Bu mesaj silindi|Pesan ini telah dihapus"
    r"|Это сообщение удалено|Данное сообщение удалено|Tämä viesti poistettiin|Poistit tämän viestin", re.IGNORECASE)
_ENCRYPTION = re.compile(r"end-to-end|Ende-zu-Ende|extremo a extremo|ponta a ponta|bout en bout|crittografa|"
                         r"uçtan uca|сквозным|päästä päähän|端到端|エンドツーエンド|end-to-end-versleuteld", re.IGNORECASE)
_NOTICE = re.compile(
    r"Messages and calls are end-to-end encrypted|Messages to this group are now secured|"
    r"Your security code with .+ changed|Missed (?:group )?(?:voice|video) call|.+ changed their phone number|"
    r".+ created group|You're now an admin|This chat is with a business account|.+ turned (?:on|off) disappearing")
_EVENT = re.compile(  # group events, where a line has a sender and no U+200E (whole single-line bodies only)
    r"~?\s?.{1,60} (?:hat (?:das Gruppenbild|den Gruppennamen|die Gruppenbeschreibung|den Betreff) .*geändert"
    r"|hat .{1,60} (?:hinzugefügt|entfernt)|hat die Gruppe verlassen|ist beigetreten|hat die Gruppe .*erstellt"
    r"|heeft de groep .*aangemaakt|creó el grupo.*|criou o grupo.*|a créé le groupe.*|ha creato il gruppo.*"
    r"|heeft .{1,60} (?:toegevoegd|verwijderd)|heeft de groep verlaten|heeft (?:de groepsafbeelding|het groepsicoon"
    r"|de groepsnaam|de groepsbeschrijving|het onderwerp) .*gewijzigd|is toegetreden"
    r"|añadió a .{1,60}|agregó a .{1,60}|salió del grupo|se unió .*|cambió (?:el asunto|la imagen|el ícono|la descripción).*"
    r"|adicionou .{1,60}|saiu do grupo|entrou usando .*|(?:mudou|alterou) (?:o assunto|a imagem|a foto|a descrição).*"
    r"|a ajouté .{1,60}|est parti|a quitté le groupe|a changé (?:le sujet|l’image|l'image|la photo|la description).*"
    r"|ha aggiunto .{1,60}|è uscito|ha abbandonato il gruppo|ha cambiato (?:l'oggetto|l’oggetto|l’immagine|l'immagine|la descrizione).*)\.?")


def whatsapp_header(line: str):
    return _HEADER.match(_unmarked(line))


def _unmarked(line: str) -> str:
    """Without iOS's leading marks, and with the narrow and no-break spaces of some clocks as spaces."""
    return line.replace("\u202f", " ").replace("\xa0", " ").lstrip("\u200e\u200f\ufeff")


def looks_like_whatsapp(lines: list[str]) -> bool:
    """Starts like WhatsApp somewhere near the top even if no header could be read: say so, not "CSV"."""
    return any(_HEADER_LIKE.match(_unmarked(line)) for line in lines[:50])


def read_whatsapp(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("whatsapp")
    entries = _entries(text.splitlines(), result)
    order = _file_date_order(entries, config, result)
    messages = []
    for position, (stamp, rest, more, marked) in enumerate(entries):
        try:
            moment = _whatsapp_time(stamp, order)
        except MALFORMED:
            result.malformed += 1
            continue
        split = _whatsapp_sender(rest, more, marked, position < 3, result.counts)
        if split:  # None: a system line, nobody's words
            messages.append(Message(split[0], split[1], moment))
    result.conversations.append(Conversation(f"whatsapp:{name}", Path(name).stem, messages))
    return result


def _entries(lines: list[str], result: Imported) -> list[tuple]:
    """(stamp groups, rest of the header line, continuation lines, marked with U+200E) per header."""
    entries = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for index, line in enumerate(lines):
        match = whatsapp_header(line)
        if match:
            entries.append((_stamp(match), match.group(9), [], line.startswith("\u200e")))
        elif _HEADER_LIKE.match(_unmarked(line)) or (index == last and _CUT_OFF.fullmatch(_unmarked(line).strip())):
            result.malformed += 1  # a header that does not parse, or one cut off: never glued to a message
        elif entries:
            entries[-1][2].append(line)  # a multi-line message goes on
        elif line.strip():
            result.malformed += 1  # text before the first message
    return entries


def _stamp(match: re.Match) -> tuple:
    """Day, month and year in the file's order, hour, minute, second, and "a"/"p" (or None)."""
    first, second, third, half_before, hour, minute, seconds, half = match.groups()[:8]
    return first, second, third, hour, minute, seconds, half or _HALF_BEFORE.get(half_before)


def _file_date_order(entries: list[tuple], config: ChatDataConfig, result: Imported) -> str:
    """--date_order, or the order the file's dates suggest, with a note when they leave it open."""
    if config.date_order != "auto":
        return config.date_order
    triples = [stamp[:3] for stamp, _, _, _ in entries]
    order = date_order(triples, any(stamp[6] for stamp, _, _, _ in entries))
    if day_month_ambiguous(triples):
        other = "mdy" if order == "dmy" else "dmy"
        result.note = f"day and month could be either way round here; read as {order} (--date_order={other} if that is wrong)"
    return order


def _whatsapp_sender(rest: str, more: list[str], marked: bool, near_top: bool, counts) -> tuple[str, str] | None:
    sender, sep, first = rest.partition(": ")
    if not sep or any(quote in sender for quote in '"“”') or len(sender) > 80:
        counts["system lines (no sender)"] += 1
        return None
    sender = clean_name(sender)
    if not sender:
        return None
    body = _app_texts("\n".join([first, *more]).strip(), marked, near_top, counts)
    return (sender, body) if body is not None else None


def _app_texts(body: str, marked: bool, near_top: bool, counts) -> str | None:
    """The body with WhatsApp's own texts made into the placeholders the cleaner knows, or None when
    the whole message is the app's (an event, a notice). Each rule counts the lines it recognised."""
    edited = _EDIT_MARK.search(body)
    if edited and INVISIBLE.sub("", body[:edited.start()]).strip():
        counts["edit markers"] += 1
        body = body[:edited.start()]
    head, newline, tail = body.partition("\n")
    marked = marked or head.startswith("\u200e")
    plain = INVISIBLE.sub("", head).strip()
    if _MEDIA_WORDS.fullmatch(plain) or (_BRACKETED.fullmatch(plain) and not plain.startswith("<attached:")
                                         and "edited" not in plain):
        counts["media placeholders (any language)"] += 1
        return MEDIA_PLACEHOLDER + newline + tail
    if _ATTACHED_FILE.fullmatch(plain):
        counts["attached-file lines"] += 1
        return MEDIA_PLACEHOLDER + newline + tail
    if _DELETED.fullmatch(plain.rstrip(".")):
        counts["deleted notices"] += 1
        return "This message was deleted"
    if (marked or near_top) and len(plain) > 50 and _ENCRYPTION.search(plain):
        counts["encryption notices"] += 1
        return None
    if not tail and CALL_RECORD.fullmatch(plain):
        counts["call records"] += 1
        return None
    if _NOTICE.match(plain):
        counts["group events"] += 1
        return None
    if plain.startswith("<attached:"):
        return INVISIBLE.sub("", body)  # the cleaner's media rule removes it, and keeps a caption
    if marked and not tail:
        counts["marked as the app's own (U+200E)"] += 1
        return None
    if not tail and _EVENT.fullmatch(plain):
        counts["group events"] += 1
        return None
    return INVISIBLE.sub("", body)


def day_month_ambiguous(triples: list[tuple[str, str, str]]) -> bool:
    """No date in the file settles whether day or month comes first."""
    if not triples or any(len(first) == 4 for first, _, _ in triples):
        return False
    try:
        return not any(int(first) > 12 or int(second) > 12 for first, second, _ in triples)
    except ValueError:
        return False


def date_order(triples: list[tuple[str, str, str]], twelve_hour: bool) -> str:
    """"ymd", "dmy" or "mdy" for a whole file, from the values seen: 31/12 is day-first, 12/31 month-first."""
    if any(len(first) == 4 for first, _, _ in triples):
        return "ymd"
    if any(int(first) > 12 for first, _, _ in triples):
        return "dmy"
    if any(int(second) > 12 for _, second, _ in triples):
        return "mdy"
    # Every number fits both ways: take the order under which the dates run forward more often.
    # Then the one under which they span less time: chats run day by day more than month by month.
    backward = {order: (_backward_steps(triples, order), _span(triples, order)) for order in ("dmy", "mdy")}
    if backward["dmy"] != backward["mdy"]:
        return min(backward, key=backward.get)
    return "mdy" if twelve_hour else "dmy"  # AM/PM clocks are mostly American


def _backward_steps(triples, order: str) -> int:
    days = [_ymd(triple, order) for triple in triples]
    return sum(later < earlier for earlier, later in zip(days, days[1:]))


def _span(triples, order: str) -> int:
    days = []
    for triple in triples:
        try:
            days.append(date(*_ymd(triple, order)).toordinal())
        except ValueError:
            continue
    return max(days) - min(days) if days else 0


def _ymd(triple, order: str) -> tuple[int, int, int]:
    a, b, c = map(int, triple)
    year, month, day = {"ymd": (a, b, c), "dmy": (c, b, a), "mdy": (c, a, b)}[order]
    return (year + 2000 if year < 100 else year), month, day


def _whatsapp_time(stamp, order: str) -> datetime:
    year, month, day = _ymd(stamp[:3], order)
    hour, minute, second, half = int(stamp[3]), int(stamp[4]), int(stamp[5] or 0), stamp[6]
    if half:
        hour = hour % 12 + (12 if half.lower() == "p" else 0)
    return datetime(year, month, day, hour, minute, second)
