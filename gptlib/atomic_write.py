"""One way to write a file so that no crash, kill or full disk leaves half of it behind.

    with atomic_write("models/run.pt") as handle:   # binary by default; text="utf-8" for text
        torch.save(state, handle)

The data goes to a hidden temporary file beside the target, is flushed and fsync'ed, then renamed
over the target (a rename within one directory is atomic on POSIX and Windows), and the directory
entry is synced. Readers see the old file or the new one, never a mixture. If anything fails on the
way, the temporary file is removed, the old file is untouched, and an OSError becomes a UserError
that says which file could not be written.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from gptlib.errors import UserError

FILE_MODE = 0o644  # mkstemp makes 0600 files; what we write is meant to be read like any other file


@contextlib.contextmanager
def atomic_write(path, text: str | None = None):
    """Yield a file handle whose content replaces `path` only when the block ends without error.
    `text` is an encoding (the handle is then a text handle with "\\n" line ends), else binary."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror or err}.") from None
    try:
        mode = "w" if text else "wb"
        with os.fdopen(handle, mode, encoding=text, newline="\n" if text else None) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, target)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UserError(f"could not write {target}: {err.strerror or err}. "
                            "Any earlier file there is untouched.") from None
        raise
    _fsync_directory(target.parent)


def write_bytes_atomically(path, data: bytes) -> None:
    with atomic_write(path) as file:
        file.write(data)


def write_text_atomically(path, text: str) -> None:
    with atomic_write(path, text="utf-8") as file:
        file.write(text)


def abandoned_temporaries(path) -> list[Path]:
    """Temporary files of earlier writes to `path` that were killed before their rename."""
    target = Path(path)
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable. Not possible on every platform (Windows), where the rename
    is still atomic."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
