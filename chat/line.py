"""LINE: the chat history .txt the app saves (phones: Settings > Export chat history; PC: Save chat).

    [LINE] Chat history with Bruno          [LINE] Brunoとのトーク履歴        [LINE] ประวัติการแชทกับ Bruno
    Saved on: 2024/01/05 21:41              保存日時：2024/01/05 21:41        บันทึกเมื่อ 05/01/2567 21:41

    2024/01/04(Thu)    Thu, 1/4/2024        2024/01/04(木)                    พฤ. 04/01/2567
    21:41<TAB>Bruno<TAB>Hello               09:41PM<TAB>Bruno<TAB>...         21:41<TAB><TAB>Bruno joined the group.

Date lines come once per day; each message line is time, sender and text separated by tabs (a notice
has no sender); a message of several lines is wrapped in double quotes. Older phone and PC versions
separate the columns with spaces ("2024.01.04 Thursday" / "21:41 Bruno Hello"). Thai dates count
Buddhist years (2567 = 2024).
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from pathlib import Path

from .model import MALFORMED, MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .options import ChatDataConfig

_TITLE = re.compile(r"\[LINE\]\s*(.*)")
_TITLE_NAME = re.compile(r"(?:Chat history (?:with|in)|Chats? in|ประวัติการ(?:แชท|สนทนา)(?:กับ|ในกลุ่ม)?)\s*(.+)"
                         r"|(.+?)(?:との|の)?トーク履歴|與(.+)的聊天記錄")
_GROUP_TITLE = re.compile(r"Chat history in|ในกลุ่ม|^\"")
_SAVED_ANY = re.compile(r"[^\t\d]{1,40}[:：]\s*\d[\d/.,: -]{5,30}(?:\s?[AaPp][Mm])?")
_SAVED = re.compile(r"(?:Saved on|Save date|Date saved|保存日時|บันทึกเมื่อ|บันทึกวันที่|儲存日期)\s*[:：]?.*")
# Date lines: year first ("2024/01/04(Thu)", "2024.01.04 Thursday", "2024/01/04 จันทร์") or a weekday
# first ("Thu, 1/4/2024", "ศ. 28/11/2568").
_DATE_YEAR_FIRST = re.compile(r"(\d{4})[/.](\d{1,2})[/.](\d{1,2})\s*(?:[(（]\s*([^()（）\s]{1,12})\s*[)）]|([^\d\s]{1,16}))?")
_DATE_WEEKDAY_FIRST = re.compile(r"(?:(?P<w1>[^\d\s,.]{1,16})\.?,?\s+)?(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4})"
                                 r"(?:\s*[(（]?(?P<w2>[^\d\s()（）]{1,16})[)）]?)?")  # the weekday before or after
_TIME = r"(?:(午前|午後|上午|下午)\s?)?(\d{1,2}):(\d{2})\s?([AaPp][Mm])?"
_TAB_LINE = re.compile(_TIME + r"\t(.*)")
_SPACE_LINE = re.compile(_TIME + r" (.+)")
# Weekday names by language, Monday first, to tell 1/4 from 4/1 where the numbers leave it open.
_WEEKDAYS = [("mon", "月", "一", "จ", "จันทร์"), ("tue", "火", "二", "อ", "อังคาร"), ("wed", "水", "三", "พ", "พุธ"),
             ("thu", "木", "四", "พฤ", "พฤหัส", "พฤหัสบดี"), ("fri", "金", "五", "ศ", "ศุกร์"), ("sat", "土", "六", "ส", "เสาร์"),
             ("sun", "日", "天", "อา", "อาทิตย์")]

# LINE's own texts. Media, stickers and the like come in square brackets in every language
# ("[Photo]", "[写真]", "[รูป]"); calls start with ☎; the older space-separated files write the word alone.
_BRACKETED = re.compile(r"\[[^\[\]\n]{1,30}\]")
_STICKER = re.compile(r"\[?(?:Sticker|スタンプ|สติกเกอร์|貼圖|스티커)\]?", re.IGNORECASE)
_BARE_MEDIA = re.compile(r"(?:Photos?|Videos?|Sticker|File|Voice message|GIF|写真|動画|スタンプ|ファイル|ボイスメッセージ"
                         r"|รูป|วิดีโอ|สติกเกอร์|ไฟล์|ข้อความเสียง|照片|影片|貼圖)", re.IGNORECASE)
_CALL = re.compile(r"☎.*|(?:Missed|Canceled|Cancelled) (?:voice |video )?call|No answer|(?:Voice |Video )?Call time \d{1,2}:\d{2}(?::\d{2})?"
                   r"|(?:音声通話|ビデオ通話)?通話時間 \d{1,2}:\d{2}(?::\d{2})?|不在着信|สายที่ไม่ได้รับ|ระยะเวลาการโทร \d{1,2}:\d{2}"
                   r"|通話時間 \d{1,2}:\d{2}|未接來電|已取消")
_UNSENT = re.compile(r".{0,60}(?: unsent a message\.?|がメッセージの送信を取り消しました|\s?ยกเลิกข้อความ(?:แล้ว)?"
                     r"|已收回訊息|메시지를 취소했습니다)|(?:You|あなた) unsent a message\.?")
_NOTICE = re.compile(
    r".{1,80}(?: joined the group| left the group| added .{1,80} to the group| invited .{1,200}| removed .{1,80} from the group"
    r"| changed the group (?:name|photo|profile photo|icon).{0,120}| created the group.{0,120}| joined the chat| left the chat"
    r"|が参加しました|が退会しました|を招待しました|がグループに参加しました|がグループを退会しました|がグループ名を.{0,120}"
    r"| เข้าร่วมกลุ่ม| ออกจากกลุ่ม| เพิ่ม .{1,80} เข้ากลุ่ม| เชิญ .{1,120}| เปลี่ยนชื่อกลุ่ม.{0,120})\.?。?")


def looks_like_line(lines: list[str]) -> bool:
    """The "[LINE]" title, or a date line with tab-separated message lines under it."""
    head = [line.lstrip("\ufeff") for line in lines[:40] if line.strip()]
    if head and _TITLE.match(head[0]):
        return True
    if not any(_is_date_line(line) for line in head[:5]):
        return False
    tabbed = sum(bool(_TAB_LINE.match(line)) for line in head[:20])
    spaced = sum(bool(_SPACE_LINE.match(line)) for line in head[:20])  # older PC and phone files
    return tabbed >= 2 or (spaced >= 2 and any(_DATE_YEAR_FIRST.fullmatch(line.strip()) for line in head[:5]))


def read_line(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("line")
    lines = text.lstrip("\ufeff").splitlines()
    title, body = _header(lines)
    tabbed = any(_TAB_LINE.match(line) for line in body[:200])
    known = [] if tabbed else _known_names(title, config.me, body)
    order = _day_month_order(body)
    messages, day, current = [], None, None
    pattern = _TAB_LINE if tabbed else _SPACE_LINE
    for line in body:
        if current is not None and current.get("open") and not pattern.match(line) and _date_of(line, order) is None:
            current["lines"].append(line)  # inside a quoted multi-line message
            current["open"] = not line.endswith('"')
            continue
        parsed = _date_of(line, order)
        if parsed is not None:
            _flush(current, messages, result, tabbed)
            day, current = parsed, None
            continue
        match = pattern.match(line)
        if match and day is not None:
            _flush(current, messages, result, tabbed)
            try:
                current = _start(match, day, tabbed, known)
            except MALFORMED:
                result.malformed, current = result.malformed + 1, None
        elif match or (day is None and line.strip()):
            result.malformed += 1  # a message before any date line
        elif current is not None and line.strip():
            current["lines"].append(line)  # an unquoted continuation (older files)
    _flush(current, messages, result, tabbed)
    group = bool(title and _GROUP_TITLE.search(title))
    result.conversations.append(Conversation(f"line:{name}", _title_name(title) or Path(name).stem, messages, group))
    return result


def _header(lines: list[str]) -> tuple[str, list[str]]:
    """The title line's text and the lines after the header ("Saved on: ..." and the blank line)."""
    start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    match = _TITLE.match(lines[start]) if lines else None
    if not match:
        return "", lines
    rest = lines[start + 1:]
    if rest and _SAVED_ANY.fullmatch(rest[0].strip()) and not _date_of(rest[0], "dmy"):
        rest = rest[1:]  # "Saved on: ..." in a language not listed: a label, a colon, a date
    while rest and (not rest[0].strip() or _SAVED.fullmatch(rest[0].strip())):
        rest = rest[1:]
    return match.group(1).strip(), rest


def _title_name(title: str) -> str:
    match = _TITLE_NAME.fullmatch(title)
    return ((match.group(1) or match.group(2) or match.group(3) or "") if match else title).strip().strip('"')


def _known_names(title: str, me: str, lines: list[str]) -> list[str]:
    """Names that may contain spaces, for space-separated files, longest first: the title's, --me's, and
    the two- or three-word starts that nearly every line of one first word shares ("Bruno Costa ...")."""
    names = {_title_name(title), *(part.strip() for part in me.split(","))}
    starts: dict[str, list[list[str]]] = {}
    for line in lines:
        match = _SPACE_LINE.match(line)
        if match:
            words = match.group(5).split(" ")
            starts.setdefault(words[0], []).append(words[:4])
    for rows in starts.values():
        for size in (3, 2):
            prefixes = Counter(" ".join(row[:size]) for row in rows if len(row) > size)
            best = prefixes.most_common(1)
            if best and best[0][1] >= max(2, 0.8 * len(rows)):
                names.add(best[0][0])
                break
    return sorted((name for name in names if name), key=len, reverse=True)


def _is_date_line(line: str) -> bool:
    return _date_of(line, "dmy") is not None


def _date_of(line: str, order: str) -> date | None:
    text = line.strip()
    match = _DATE_YEAR_FIRST.fullmatch(text)
    try:
        if match:
            return date(_gregorian(int(match.group(1))), int(match.group(2)), int(match.group(3)))
        match = _DATE_WEEKDAY_FIRST.fullmatch(text)
        if match:
            return _weekday_first(match, order)
    except ValueError:
        return None
    return None


def _weekday_first(match: re.Match, order: str) -> date:
    """"Thu, 1/4/2024": whichever of day-month and month-day falls on the weekday named, else the file's order."""
    weekday = match.group("w1") or match.group("w2") or ""
    first, second, year = int(match.group("a")), int(match.group("b")), _gregorian(int(match.group("y")))
    candidates = []
    for day, month in ((first, second), (second, first)) if order == "dmy" else ((second, first), (first, second)):
        try:
            candidates.append(date(year, month, day))
        except ValueError:
            continue
    named = [moment for moment in candidates if _names_weekday(weekday, moment)]
    if not (named or candidates):
        raise ValueError("no such date")
    return (named or candidates)[0]


def _names_weekday(word: str, moment: date) -> bool:
    word = word.strip(".,").lower()
    names = _WEEKDAYS[moment.weekday()]
    return word[:3] == names[0] or word in names[1:] or word.removeprefix("วัน") in names[1:]


def _gregorian(year: int) -> int:
    return year - 543 if year > 2400 else year  # Thai dates count from 543 BC


def _day_month_order(lines: list[str]) -> str:
    """For "a/b/yyyy" date lines whose weekday is not known: day first unless a second number above 12 says not."""
    for line in lines:
        match = _DATE_WEEKDAY_FIRST.fullmatch(line.strip())
        if match and int(match.group("b")) > 12:
            return "mdy"
        if match and int(match.group("a")) > 12:
            return "dmy"
    return "dmy"


def _start(match: re.Match, day: date, tabbed: bool, known: list[str]) -> dict:
    half_before, hour, minute, half, rest = match.groups()
    hour = int(hour)
    if half or half_before:
        hour = hour % 12 + (12 if (half or "").lower() == "pm" or half_before in ("午後", "下午") else 0)
    moment = datetime(day.year, day.month, day.day, hour, int(minute))  # ValueError: malformed, counted by the caller
    if tabbed:
        sender, sep, first = rest.partition("\t")
        if not sep:
            sender, first = "", sender  # two columns: a notice without a sender
    else:
        sender, first = _split_spaced(rest, known)
    return {"time": moment, "sender": sender, "lines": [first], "open": first.startswith('"') and not
            (len(first) > 1 and first.endswith('"'))}


def _split_spaced(rest: str, known: list[str]) -> tuple[str, str]:
    """"Bruno Costa Hello" with no tabs: a known name (the title's, --me's) if it starts the line, else the first word."""
    for name in known:
        if rest.startswith(name + " "):
            return name, rest[len(name) + 1:]
    sender, _, text = rest.partition(" ")
    return sender, text


def _flush(current: dict | None, messages: list[Message], result: Imported, tabbed: bool) -> None:
    """The message being gathered, once its last line is known, into `messages` (unless it is LINE's own)."""
    if current is None:
        return
    text = "\n".join(current["lines"])
    if len(current["lines"]) > 1 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('""', '"')  # a multi-line message, quoted as in CSV
    try:
        sender = clean_name(current["sender"])
        text = _app_text(text.strip(), sender, tabbed, result.counts)
    except MALFORMED:
        result.malformed += 1
        return
    if text is not None and sender:
        messages.append(Message(sender, text, current["time"]))


def _app_text(text: str, sender: str, tabbed: bool, counts) -> str | None:
    """The text, the placeholder the cleaner knows for LINE's own media texts, or None for notices and calls.
    A notice under a sender must name that sender first ("Bruno joined the group."): "I invited Bob" is words."""
    if _CALL.fullmatch(text):
        counts["call records"] += 1
        return None
    if _UNSENT.fullmatch(text):
        counts["deleted notices"] += 1
        return None
    if not sender or (text.startswith(sender) and _NOTICE.fullmatch(text)):
        counts["group events" if sender or text else "system lines (no sender)"] += 1
        return None
    if _STICKER.fullmatch(text) and (text.startswith("[") or not tabbed):
        counts["stickers"] += 1
        return MEDIA_PLACEHOLDER
    if _BRACKETED.fullmatch(text) or (not tabbed and _BARE_MEDIA.fullmatch(text)):
        counts["media placeholders (any language)"] += 1
        return MEDIA_PLACEHOLDER
    return text
