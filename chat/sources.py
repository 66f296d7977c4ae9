"""What to read: files as given, folders file by file, and .zip or .tar archives as the apps share them
(WhatsApp iOS: "WhatsApp Chat - NAME.zip" holding _chat.txt; Android: the .txt with media beside it;
Skype: a .tar holding messages.json). A Slack export (users.json beside channels.json, a folder of
days per channel) is read as one whole, from its .zip or its folder."""
from __future__ import annotations

import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gptlib.errors import UserError

from .detect import parse_export
from .files import decode
from .google_chat import with_group_info
from .model import Imported
from .options import ChatDataConfig
from .slack import is_slack_export, read_slack_export

CHAT_SUFFIXES = (".txt", ".json", ".csv", ".jsonl", ".html", ".md")
ARCHIVE_SUFFIXES = (".zip", ".tar")
MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic", ".mp4", ".mov", ".3gp", ".opus", ".ogg", ".m4a",
                  ".mp3", ".aac", ".amr", ".wav", ".pdf", ".vcf", ".docx", ".xlsx", ".pptx", ".tgs", ".webm", ".caf")
LAYOUT_SUFFIXES = (".css", ".js", ".svg", ".ico")  # Telegram's HTML export brings its own style and scripts
# What a damaged archive raises from zipfile or tarfile, found by tests/test_fuzz.py (an empty member
# name, a corrupt deflate stream): each becomes one clear message.
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, struct.error, ValueError, IndexError,
                  KeyError, RuntimeError, NotImplementedError, OverflowError, AttributeError)
MAX_MEMBER_BYTES = 1 << 30  # a chat inside an archive larger than this is refused, not read into memory
# Chat text packs 3 to 10 times (measured: 3.6x for the example chat); a member that unpacks to more
# than 100 times its packed size, and to more than 10 MB, is a zip bomb, refused before it is read.
MAX_PACKING_RATIO = 100


@dataclass
class Source:
    name: str  # as the report shows it: the path, or ARCHIVE.zip/MEMBER
    path: Path  # the file on disk (the archive, for a member; the export's folder, for a Slack folder)
    member: str = ""  # the name inside the archive (for a Slack export in an archive: its folder there, or "")
    in_folder: bool = False  # found in a folder or an archive: if it is no chat, it is skipped, not an error
    slack: bool = False  # a whole Slack export: the folder or archive, not one file

    def read_bytes(self) -> bytes:
        return read_member(self.path, self.member, self.name) if self.member else _read_file(self.path)

    def sibling(self, filename: str) -> bytes | None:
        """A file beside this one (Google Chat's group_info.json beside messages.json), or None."""
        try:
            if self.member:
                other = str(PurePosixPath(self.member).parent / filename).removeprefix("./")
                return read_member(self.path, other, self.name) if other in archive_members(self.path) else None
            beside = self.path.parent / filename
            return beside.read_bytes() if beside.is_file() else None
        except (OSError, UserError):
            return None

    def tree(self) -> dict:
        """A Slack export's files: path inside the export -> a function giving its bytes."""
        if self.path.is_dir():
            return {file.relative_to(self.path).as_posix(): file.read_bytes for file in self.path.rglob("*.json")}
        if self.path.suffix.lower() == ".tar":
            return {member[len(self.member):]: (lambda member=member: read_member(self.path, member, self.name))
                    for member in archive_members(self.path) if member.startswith(self.member) and member.endswith(".json")}
        return _zip_json(self.path, self.member, self.name)


def _zip_json(path: Path, root: str, name: str) -> dict:
    """Every JSON file under `root` in a .zip, read with the archive opened once: a Slack export holds
    a file per channel and day, thousands of them, and reopening the archive for each is slow."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [info for info in archive.infolist() if info.filename.startswith(root) and info.filename.endswith(".json")]
            if sum(info.file_size for info in infos) > MAX_MEMBER_BYTES:
                raise UserError(f"{name}: its JSON is larger than {MAX_MEMBER_BYTES >> 20} MB unpacked; unpack it first.")
            for info in infos:
                _not_a_bomb(info, name)
            contents = {info.filename[len(root):]: archive.read(info) for info in infos}
    except OSError as err:
        raise UserError(f"cannot read {name}: {err.strerror or err}") from None
    except ARCHIVE_ERRORS as err:
        raise UserError(f"cannot read {name} from its archive ({type(err).__name__}: {_one_line(err)}); the archive is damaged.") from None
    return {member: (lambda raw=raw: raw) for member, raw in contents.items()}


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None


def archive_members(path: Path) -> list[str]:
    """The files (not folders) in a .zip or .tar."""
    if path.suffix.lower() == ".tar" or (not zipfile.is_zipfile(path) and tarfile.is_tarfile(path)):
        with tarfile.open(path) as archive:
            return [info.name for info in archive.getmembers() if info.isfile()]
    with zipfile.ZipFile(path) as archive:
        return [info.filename for info in archive.infolist() if info.filename and not info.is_dir()]


def read_member(path: Path, member: str, name: str) -> bytes:
    try:
        if path.suffix.lower() == ".tar" or (not zipfile.is_zipfile(path) and tarfile.is_tarfile(path)):
            with tarfile.open(path) as archive:
                info = archive.getmember(member)
                if info.size > MAX_MEMBER_BYTES:
                    raise UserError(f"{name}: larger than {MAX_MEMBER_BYTES >> 20} MB unpacked; unpack it first.")
                return archive.extractfile(info).read()
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise UserError(f"{name}: larger than {MAX_MEMBER_BYTES >> 20} MB unpacked; unpack it first.")
            _not_a_bomb(info, name)
            return archive.read(member)
    except OSError as err:
        raise UserError(f"cannot read {name}: {err.strerror or err}") from None
    except ARCHIVE_ERRORS as err:
        raise UserError(f"cannot read {name} from its archive ({type(err).__name__}: {_one_line(err)}); the archive is damaged.") from None


def _one_line(err: Exception) -> str:
    """tarfile explains a failure over five lines (one per compression it tried); a message is one line."""
    return " ".join(str(err).split())[:300]


def _not_a_bomb(info: zipfile.ZipInfo, name: str) -> None:
    if info.file_size > 10 << 20 and info.file_size > MAX_PACKING_RATIO * max(info.compress_size, 1):
        raise UserError(f"{name}: unpacks to {info.file_size >> 20} MB from {info.compress_size >> 10} kB, more than "
                        f"{MAX_PACKING_RATIO} times: a zip bomb, not a chat. Unpack it yourself if you trust it.")


def read_source(source: Source, config: ChatDataConfig) -> tuple[Imported, int]:
    if source.slack:
        return read_slack_export(source.tree(), source.name), 0
    text, replaced = decode(source.read_bytes())
    imported = parse_export(text, source.name, config)
    if imported.format == "google-chat":
        with_group_info(imported, source.sibling("group_info.json"))
    return imported, replaced


def find_sources(paths: list[Path]) -> tuple[list[Source], list[tuple[str, str]]]:
    """The files to read, and those found in folders or archives that are left alone, each with why."""
    sources, skipped = [], []
    for path in paths:
        if path.is_dir():
            files = sorted(file for file in path.rglob("*") if file.is_file())
            roots = _slack_folders(path, files)
            sources += [Source(str(root), root, in_folder=True, slack=True) for root in roots]
            for file in files:
                if not any(root in file.parents for root in roots):
                    _add(file, True, sources, skipped)
        elif path.is_file():
            _add(path, False, sources, skipped)
        else:
            raise UserError(f"{path}: no such file or folder.")
    return sources, skipped


def _slack_folders(top: Path, files: list[Path]) -> list[Path]:
    """Folders holding a Slack export (users.json beside channels.json or dms.json), outermost first."""
    roots = []
    for file in files:
        if file.name == "users.json" and is_slack_export([f.relative_to(file.parent).as_posix() for f in file.parent.iterdir()]) == "":
            if not any(root in file.parents for root in roots):
                roots.append(file.parent)
    return roots


def _add(path: Path, in_folder: bool, sources: list[Source], skipped: list[tuple[str, str]]) -> None:
    suffix = path.suffix.lower()
    if suffix in ARCHIVE_SUFFIXES:
        _add_archive(path, in_folder, sources, skipped)
    elif not in_folder or suffix in CHAT_SUFFIXES:
        sources.append(Source(str(path), path, in_folder=in_folder))
    else:
        skipped.append((str(path), why_skipped(suffix)))


def _add_archive(path: Path, in_folder: bool, sources: list[Source], skipped: list[tuple[str, str]]) -> None:
    try:
        members = archive_members(path)
    except (OSError, *ARCHIVE_ERRORS) as err:
        if in_folder:
            skipped.append((str(path), f"not a readable {path.suffix.lower()}"))
            return
        raise UserError(f"{path}: not a readable {path.suffix.lower()} archive ({_one_line(err)}).") from None
    root = is_slack_export(members)
    if root is not None:  # a Slack export: its JSON files are read together, the rest listed as skipped
        sources.append(Source(f"{path}/{root}".rstrip("/"), path, root, in_folder=in_folder, slack=True))
        skipped += [(f"{path}/{m}", why_skipped(Path(m).suffix.lower())) for m in members
                    if m.startswith(root) and not m.endswith(".json")]
        members = [m for m in members if not m.startswith(root)]
    chats = [member for member in members if Path(member).suffix.lower() in CHAT_SUFFIXES
             and not Path(member).name.startswith("._")]  # macOS leaves ._NAME shadows in archives
    skipped += [(f"{path}/{member}", why_skipped(Path(member).suffix.lower())) for member in members if member not in chats]
    if not chats and root is None and not in_folder:
        raise UserError(f"{path}: the archive holds no chat export (no .txt, .json, .csv or .html inside).")
    sources += [Source(f"{path}/{member}", path, member, in_folder=True) for member in sorted(chats)]


def why_skipped(suffix: str) -> str:
    if suffix in MEDIA_SUFFIXES:
        return "media or attachment"
    if suffix in LAYOUT_SUFFIXES:
        return "page layout (style, script, icon)"
    return f"not a chat format ({suffix or 'no extension'})"
