"""The project's one error for mistakes a user can fix, and how every command turns it into one line.

Every module raises `UserError` with a message that says what is wrong and how to fix it; the command's
`run_cli` prints it as `error: ...` on stderr and exits with status 2, never with a traceback.
"""
from __future__ import annotations

import os
import sys


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file...): shown as one line, no traceback."""


def run_cli(main, argv=None) -> None:
    """Run `main(argv)`; a UserError becomes one line on stderr and exit status 2, no traceback."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves and exits on its own)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into `head`: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
