"""KakaoTalk: the text the app exports (chat room > menu > Export chat / 대화 내보내기), from phones and PCs.

    Bruno 님과 카카오톡 대화                                   (phones, Korean; English: "KakaoTalk Chats with Bruno")
    저장한 날짜 : 2024-01-05 21:41:00
    2024년 1월 4일 목요일                                      (a date line; iOS: "2024. 1. 4. 목요일")
    2024년 1월 4일 오후 9:41, Bruno : 안녕                     (iOS: "2024. 1. 4. 오후 9:41, Bruno : 안녕")
    Jan 4, 2024, 9:41 PM, Bruno : Hello                        (English; "January 4, 2024 at 9:41 PM, ..." too)

    --------------- 2024년 1월 4일 목요일 ---------------      (PC: dashed date lines)
    [Bruno] [오후 9:41] 안녕                                   ([Bruno] [9:41 PM] Hello)

and the CSV some versions write (Date,User,Message).
"""
from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

from .csv_format import csv_rows
from .model import MALFORMED, MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .options import ChatDataConfig
from .times import parse_time_text

_MONTHS = {name: number for number, names in enumerate(
    [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
     ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
     ("dec", "december")], start=1) for name in names}
# A date: 2024년 1월 4일 | 2024. 1. 4. | 2024-01-04 | 2024/1/4 | Jan 4, 2024 | January 4, 2024 | 4 Jan 2024
_DATE = (r"(?:(?P<y1>\d{4})년\s?(?P<m1>\d{1,2})월\s?(?P<d1>\d{1,2})일"
         r"|(?P<y2>\d{4})[./-]\s?(?P<m2>\d{1,2})[./-]\s?(?P<d2>\d{1,2})\.?"
         r"|(?P<mn>[A-Za-z]{3,9})\.? (?P<d3>\d{1,2}), (?P<y3>\d{4})"
         r"|(?P<d4>\d{1,2}) (?P<mn4>[A-Za-z]{3,9})\.? (?P<y4>\d{4}))")
_CLOCK = r"(?:(?P<hb>오전|오후|AM|PM)\s?)?(?P<h>\d{1,2}):(?P<mi>\d{2})(?::\d{2})?(?:\s?(?P<ha>AM|PM|am|pm))?"
_MOBILE = re.compile(_DATE + r",?\s+(?:at\s+)?" + _CLOCK + r"(?:,\s|:\s)(?P<rest>.*)")
_TIME_ONLY = re.compile(_CLOCK + r"(?:,\s|:\s)(?P<rest>.*)")  # iOS Korean: "오후 8:36, Bruno : 안녕" under a date line
_PC = re.compile(r"\[(?P<sender>[^\[\]]{1,80})\] \[" + _CLOCK + r"\] (?P<rest>.*)")
_PC_DATE = re.compile(r"-{5,}\s*(.+?)\s*-{5,}")
_DATE_LINE = re.compile(_DATE + r",?\s*(?:\(?[가-힣]요일\)?|[A-Za-z]+day)?")
_WEEKDAY_FIRST = re.compile(r"[A-Za-z]+day, (.+)")  # "Thursday, January 4, 2024"
_TITLE = re.compile(r".{1,120}(?: 님과 카카오톡 대화| 카카오톡 대화)|.{0,120}KakaoTalk Chats.{0,120}|Talk_\d{4}\..*")
_SAVED = re.compile(r"(?:저장한 날짜|Date Saved|Saved Date)\s*:.*")

# KakaoTalk's own texts (Korean and English).
_MEDIA = re.compile(r"(?:사진|동영상|음성메시지|Photo|Video|Voice Note|Voice message)(?: \d+장| \d+ photos)?"
                    r"|\d+ (?:photos|videos)|사진 \d+장|(?:파일|File): .{1,200}|(?:샵검색|#Search): .{1,200}|지도: .{1,200}"
                    r"|연락처: .{1,100}|Contact: .{1,100}|Location: .{1,200}", re.IGNORECASE)
_STICKER = re.compile(r"\(?(?:이모티콘|Emoticons?|Sticker)\)?", re.IGNORECASE)
_DELETED = re.compile(r"(?:삭제된 메시지입니다|메시지가 삭제되었습니다|This message has been deleted|Deleted message"
                      r"|Message deleted|채팅방 관리자가 메시지를 가렸습니다)\.?", re.IGNORECASE)
_CALL = re.compile(r"(?:보이스톡|페이스톡|Voice ?Talk|Face ?Talk|Voice call|Video call)\s?(?:해요|취소|부재중|응답없음|Cancell?ed"
                   r"|Missed|No answer|\d{1,2}:\d{2}(?::\d{2})?)?\.?|(?:부재중 |Missed )(?:보이스톡|페이스톡|Voice ?Talk|Face ?Talk)",
                   re.IGNORECASE)
_NOTICE = re.compile(r".{1,80}님이 (?:들어왔습니다|나갔습니다|.{1,200}님을 초대(?:하였|했)습니다|.{1,80}님을 내보냈습니다)\.?"
                     r"|.{1,80} (?:joined|left) this chatroom\.|.{1,80} (?:has )?left the chat(?:room)?\."
                     r"|.{1,80} removed .{1,80} from this chatroom\.|.{1,80} has entered(?: the chatroom)?\.", re.IGNORECASE)
# Only after a time ("Jan 4, 2024 at 21:42: Bruno invited Carla."), never in a message's own lines.
_INVITED = re.compile(r".{1,80} invited .{1,200}\.", re.IGNORECASE)


def looks_like_kakao(lines: list[str]) -> bool:
    head = [line.lstrip("\ufeff").strip() for line in lines[:60] if line.strip()]
    if head and _TITLE.fullmatch(head[0]) and any(_SAVED.fullmatch(line) for line in head[1:4]):
        return True
    return sum(bool(_message_match(line)) for line in head[:40]) >= 2


def _message_match(line: str):
    match = _MOBILE.match(line) or _PC.match(line) or _TIME_ONLY.match(line)
    rest = match.group("rest") if match else ""
    if match and match.re is not _PC and " : " not in rest and not (_NOTICE.fullmatch(rest) or _INVITED.fullmatch(rest)):
        return None  # a WhatsApp-like line, not KakaoTalk's "sender : text"
    return match


def read_kakao(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("kakaotalk")
    lines = text.lstrip("\ufeff").splitlines()
    title = lines[0].strip() if lines and _TITLE.fullmatch(lines[0].strip()) else ""
    messages, day, current = [], None, None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if index < 4 and (stripped == title or _SAVED.fullmatch(stripped)):
            continue
        new_day = _date_line(stripped)
        if new_day is not None:
            day = new_day
            continue
        match = _message_match(line)
        if match is None:
            if current is not None and not _NOTICE.fullmatch(stripped):
                current[2].append(line)  # a message of several lines goes on
            elif stripped and _NOTICE.fullmatch(stripped):
                result.counts["group events"] += 1
            elif stripped:
                result.malformed += 1
            continue
        _add(current, messages, result)
        current = _start(match, day, result)
    _add(current, messages, result)
    group = bool(re.search(r" \d+(?: 님과)? 카카오톡 대화$", title))  # "Friends 5 님과 카카오톡 대화": a group of five
    result.conversations.append(Conversation(f"kakaotalk:{name}", _title_name(title) or Path(name).stem, messages, group))
    return result


def _title_name(title: str) -> str:
    for suffix in (" 님과 카카오톡 대화", " 카카오톡 대화", " with KakaoTalk Chats"):
        if title.endswith(suffix):
            return re.sub(r" \d+$", "", title[: -len(suffix)]).strip()
    if title.startswith("Talk_"):
        return ""  # iOS names the file, not the chat
    return title.removeprefix("KakaoTalk Chats with ").strip()


def _date_line(line: str) -> date | None:
    dashed = _PC_DATE.fullmatch(line)
    text = dashed.group(1) if dashed else line
    weekday_first = _WEEKDAY_FIRST.fullmatch(text)
    text = weekday_first.group(1) if weekday_first else text
    match = _DATE_LINE.fullmatch(text)
    if not match:
        return None
    try:
        return _date_of(match)
    except (ValueError, KeyError):
        return None


def _date_of(match: re.Match) -> date:
    g = match.groupdict()
    if g["y1"]:
        return date(int(g["y1"]), int(g["m1"]), int(g["d1"]))
    if g["y2"]:
        return date(int(g["y2"]), int(g["m2"]), int(g["d2"]))
    if g["y3"]:
        return date(int(g["y3"]), _MONTHS[g["mn"].lower()], int(g["d3"]))
    return date(int(g["y4"]), _MONTHS[g["mn4"].lower()], int(g["d4"]))


def _start(match: re.Match, day: date | None, result: Imported) -> list | None:
    """[time, sender, lines] of a new message, or None for a notice line ("Bruno님이 들어왔습니다.")."""
    try:
        moment_day = _date_of(match) if match.re is _MOBILE else day
        if moment_day is None:
            raise ValueError("a message before any date line")
        moment = _at(moment_day, match)
    except (ValueError, KeyError):
        result.malformed += 1
        return None
    rest = match.group("rest")
    if match.re is _PC:
        return [moment, match.group("sender"), [rest]]
    sender, sep, first = rest.partition(" : ")
    if not sep:
        result.counts["group events"] += 1
        return None
    return [moment, sender, [first]]


def _add(current: list | None, messages: list[Message], result: Imported) -> None:
    if current is None:
        return
    moment, sender, lines = current
    try:
        sender = clean_name(sender)
        text = kakao_app_text("\n".join(lines).strip(), result.counts)
    except MALFORMED:
        result.malformed += 1
        return
    if sender and text is not None:
        messages.append(Message(sender, text, moment))


def kakao_app_text(text: str, counts) -> str | None:
    """The text, the placeholder for KakaoTalk's media texts, or None for calls and deleted messages."""
    if _CALL.fullmatch(text):
        counts["call records"] += 1
        return None
    if _DELETED.fullmatch(text):
        counts["deleted notices"] += 1
        return None
    if _STICKER.fullmatch(text):
        counts["stickers"] += 1
        return MEDIA_PLACEHOLDER
    if _MEDIA.fullmatch(text):
        counts["media placeholders (any language)"] += 1
        return MEDIA_PLACEHOLDER
    return text


_DATE_TIME = re.compile(_DATE + r",?\s+(?:at\s+)?" + _CLOCK)


def _spelled_time(value: str) -> datetime | None:
    """"2024. 1. 4. 오후 9:41" and the like, where a CSV writes the time as the chat does."""
    match = _DATE_TIME.fullmatch(value.strip())
    if not match:
        return None
    return _at(_date_of(match), match)


def _at(day: date, match: re.Match) -> datetime:
    """The day at the clock of `match`: 오후/PM before or after the time make it afternoon."""
    half, hour = (match.group("hb") or match.group("ha") or "").upper(), int(match.group("h"))
    if half:
        hour = hour % 12 + (12 if half in ("오후", "PM") else 0)
    return datetime(day.year, day.month, day.day, hour, int(match.group("mi")))


def read_kakao_csv(text: str, name: str, config: ChatDataConfig) -> Imported:
    """Date,User,Message rows, oldest first; the chat's name is the file's."""
    result = Imported("kakaotalk-csv")
    messages = []
    header, rows = csv_rows(text, result)
    date_key, user_key, text_key = (("Date", "User", "Message") if "User" in header else ("날짜", "사용자", "메시지"))
    for row in rows:
        try:
            moment = parse_time_text(row[date_key]) or _spelled_time(row[date_key])
            sender = clean_name(row[user_key])
            if moment is None or not sender:
                raise ValueError("no time or sender")
            body = kakao_app_text(row[text_key].strip(), result.counts)
        except MALFORMED:
            result.malformed += 1
            continue
        if body is not None:
            messages.append(Message(sender, body, moment))
    result.conversations.append(Conversation(f"kakaotalk-csv:{name}", Path(name).stem, messages))
    return result
