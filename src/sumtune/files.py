"""Atomic file replacement shared by every writer of results, reports and plots.

Several processes may write the same output folder at once (two `sumtune tune` workers on one
study, for example). Each writer therefore gets its own temporary name, so one process never
renames a file that another is still writing or has already moved.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a unique temporary path beside `path`; rename it over `path` when the block succeeds.

    The temporary name keeps `path`'s suffix, so tools that choose a format from the file name
    (matplotlib's savefig, for one) still do. If the block raises, the temporary file is removed
    and `path` is left as it was.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a unique temporary file and one rename."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
