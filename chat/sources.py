"""What to read: files as given, folders file by file, and .zip archives as the apps share them
(WhatsApp iOS: "WhatsApp Chat - NAME.zip" holding _chat.txt; Android: the .txt with media beside it)."""
from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from gptlib.errors import UserError

from .detect import parse_export
from .files import decode
from .model import Imported
from .options import ChatDataConfig

CHAT_SUFFIXES = (".txt", ".json", ".csv", ".jsonl", ".html")
MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic", ".mp4", ".mov", ".3gp", ".opus", ".ogg", ".m4a",
                  ".mp3", ".aac", ".amr", ".wav", ".pdf", ".vcf", ".docx", ".xlsx", ".pptx", ".tgs", ".webm", ".caf")
LAYOUT_SUFFIXES = (".css", ".js", ".svg", ".ico")  # Telegram's HTML export brings its own style and scripts
# What a damaged archive raises from zipfile, found by tests/test_fuzz.py (an empty member name, a
# corrupt deflate stream): each becomes one clear message.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, IndexError, KeyError, RuntimeError,
              NotImplementedError, OverflowError)
MAX_MEMBER_BYTES = 1 << 30  # a chat inside an archive larger than this is refused, not read into memory
# Chat text packs 3 to 10 times (measured: 3.6x for the example chat); a member that unpacks to more
# than 100 times its packed size, and to more than 10 MB, is a zip bomb, refused before it is read.
MAX_PACKING_RATIO = 100


@dataclass
class Source:
    name: str  # as the report shows it: the path, or ARCHIVE.zip/MEMBER
    path: Path  # the file on disk (the archive, for a member)
    member: str = ""  # the name inside the archive
    in_folder: bool = False  # found in a folder or an archive: if it is no chat, it is skipped, not an error

    def read_bytes(self) -> bytes:
        try:
            if not self.member:
                return self.path.read_bytes()
            with zipfile.ZipFile(self.path) as archive:
                info = archive.getinfo(self.member)
                if info.file_size > MAX_MEMBER_BYTES:
                    raise UserError(f"{self.name}: larger than {MAX_MEMBER_BYTES >> 20} MB unpacked; unpack it first.")
                if info.file_size > 10 << 20 and info.file_size > MAX_PACKING_RATIO * max(info.compress_size, 1):
                    raise UserError(f"{self.name}: unpacks to {info.file_size >> 20} MB from {info.compress_size >> 10} kB, "
                                    f"more than {MAX_PACKING_RATIO} times: a zip bomb, not a chat. Unpack it yourself if you trust it.")
                return archive.read(self.member)
        except OSError as err:
            raise UserError(f"cannot read {self.name}: {err.strerror or err}") from None
        except ZIP_ERRORS as err:
            raise UserError(f"cannot read {self.name} from its archive ({type(err).__name__}: {err}); "
                            "the archive is damaged.") from None


def read_source(source: Source, config: ChatDataConfig) -> tuple[Imported, int]:
    text, replaced = decode(source.read_bytes())
    return parse_export(text, source.name, config), replaced


def find_sources(paths: list[Path]) -> tuple[list[Source], list[tuple[str, str]]]:
    """The files to read, and those found in folders or archives that are left alone, each with why."""
    sources, skipped = [], []
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file():
                    _add(file, True, sources, skipped)
        elif path.is_file():
            _add(path, False, sources, skipped)
        else:
            raise UserError(f"{path}: no such file or folder.")
    return sources, skipped


def _add(path: Path, in_folder: bool, sources: list[Source], skipped: list[tuple[str, str]]) -> None:
    suffix = path.suffix.lower()
    if suffix == ".zip":
        _add_archive(path, in_folder, sources, skipped)
    elif not in_folder or suffix in CHAT_SUFFIXES:
        sources.append(Source(str(path), path, in_folder=in_folder))
    else:
        skipped.append((str(path), why_skipped(suffix)))


def _add_archive(path: Path, in_folder: bool, sources: list[Source], skipped: list[tuple[str, str]]) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info.filename for info in archive.infolist() if info.filename and not info.is_dir()]
    except (OSError, *ZIP_ERRORS) as err:
        if in_folder:
            skipped.append((str(path), "not a readable .zip"))
            return
        raise UserError(f"{path}: not a readable .zip archive ({err}).") from None
    chats = [member for member in members if Path(member).suffix.lower() in CHAT_SUFFIXES
             and not Path(member).name.startswith("._")]  # macOS leaves ._NAME shadows in archives
    skipped += [(f"{path}/{member}", why_skipped(Path(member).suffix.lower())) for member in members if member not in chats]
    if not chats and not in_folder:
        raise UserError(f"{path}: the archive holds no chat export (no .txt, .json, .csv or .html inside).")
    sources += [Source(f"{path}/{member}", path, member, in_folder=True) for member in sorted(chats)]


def why_skipped(suffix: str) -> str:
    if suffix in MEDIA_SUFFIXES:
        return "media or attachment"
    if suffix in LAYOUT_SUFFIXES:
        return "page layout (style, script, icon)"
    return f"not a chat format ({suffix or 'no extension'})"
