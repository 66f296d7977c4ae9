"""CSV rows as dicts (a broken row is counted, never fatal), and any other CSV through --columns."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from gptlib.errors import UserError

from .model import MALFORMED, Conversation, Imported, Message, clean_name
from .options import ChatDataConfig
from .times import parse_time_text


def csv_cells(line: str) -> set[str]:
    try:
        return {cell.strip() for cell in next(csv.reader([line]), [])}
    except csv.Error:
        return set()


def csv_rows(text: str, result: Imported):
    """The header, and a generator of rows as dicts; a row that cannot be parsed is counted in `result`."""
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [cell.strip() for cell in next(reader, [])]
    except csv.Error:
        header = []

    def rows():
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:
                result.malformed += 1
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
                result.malformed += 1  # more cells than columns: a broken quote, most likely
                continue
            yield dict(zip(header, row + [""] * (len(header) - len(row))))
    return header, rows()


def read_csv_columns(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("csv")
    columns = config.column_map()
    header, rows = csv_rows(text, result)
    missing = [column for column in columns.values() if column not in header]
    if missing:
        raise UserError(f"{name}: no column {missing[0]!r} (from --columns); its columns are "
                        f"{', '.join(map(repr, header[:12]))}.")
    conversations: dict[str, Conversation] = {}
    for row in rows:
        try:
            sender = clean_name(row[columns["sender"]])
            moment = parse_time_text(row[columns["time"]]) if "time" in columns else None
            if not sender or ("time" in columns and moment is None):
                raise ValueError("no sender or time")
            key = row[columns["conversation"]] if "conversation" in columns else Path(name).stem
        except MALFORMED:
            result.malformed += 1
            continue
        if key not in conversations:
            conversations[key] = Conversation(f"csv:{name}:{key}", key, [])
        conversations[key].messages.append(Message(sender, row[columns["text"]], moment))
    result.conversations.extend(conversations.values())
    return result
