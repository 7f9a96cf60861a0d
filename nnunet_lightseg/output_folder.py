"""The tools' output folders: ours only when they carry our marker (standard library only).

`benchmark --output` and `report --output` write into a folder they `claim`: a new or empty folder
gets the marker file `MARKER`; a folder with the marker is ours (a rerun resumes or rewrites it);
any other non-empty folder is refused (`OutputFolderError`), unless `force`, which moves its
entries, untouched, into `<folder>/previous-<YYYYmmdd-HHMMSS>/` first. Nothing is ever deleted.
`write_atomically` writes a file of ours so that a crash leaves the old or the new content, never
half of it.
"""
from __future__ import annotations

import os
import tempfile
import time

from nnunet_lightseg.errors import OutputFolderError

MARKER = ".nnunet-lightseg"
MARKER_TEXT = "This folder was created by nnunet-lightseg; its files may be rewritten by its next run.\n"
ASIDE_PREFIX = "previous-"
NAMES_SHOWN = 3  # entries named in a refusal


def is_ours(folder: str) -> bool:
    """Whether `folder` carries our marker."""
    return os.path.isfile(os.path.join(folder, MARKER))


def check(folder: str, force: bool = False) -> None:
    """Raise OutputFolderError if `claim(folder, force)` would refuse; touches nothing."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputFolderError(f"--output {folder} is a file, not a folder: give a folder (new or empty).")
    if force or not os.path.isdir(folder) or is_ours(folder):
        return
    entries = sorted(os.listdir(folder))
    if entries:
        shown = ", ".join(entries[:NAMES_SHOWN]) + (", ..." if len(entries) > NAMES_SHOWN else "")
        raise OutputFolderError(f"--output {folder} holds files nnunet-lightseg did not write ({shown}): give a new "
                                f"or empty folder, or add --force to move them into {folder}/{ASIDE_PREFIX}<time>/.")


def claim(folder: str, force: bool = False) -> str | None:
    """Make `folder` ours (create it, or accept it as is) and mark it.

    Returns the folder the earlier entries were moved into (with `force`), else None. Raises
    OutputFolderError, touching nothing, when it holds entries not ours and `force` is off, and
    when it cannot be written to (read-only, or a path through a file).
    """
    check(folder, force)
    moved = None
    try:
        if os.path.isdir(folder) and not is_ours(folder) and os.listdir(folder):
            moved = move_aside(folder)
        os.makedirs(folder, exist_ok=True)
        if not is_ours(folder):
            with open(os.path.join(folder, MARKER), "w") as f:
                f.write(MARKER_TEXT)
    except OSError as error:
        raise OutputFolderError(f"--output {folder}: cannot write there ({error.strerror}); give a folder you "
                                f"can write to.") from None
    return moved


def move_aside(folder: str) -> str:
    """Move every entry of `folder` into a new `<folder>/previous-<YYYYmmdd-HHMMSS>[-N]/`; return that path."""
    entries = os.listdir(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, number = os.path.join(folder, ASIDE_PREFIX + stamp), 1
    while os.path.exists(aside):
        number += 1
        aside = os.path.join(folder, f"{ASIDE_PREFIX}{stamp}-{number}")
    os.mkdir(aside)
    for entry in entries:
        os.rename(os.path.join(folder, entry), os.path.join(aside, entry))
    return aside


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it and os.replace."""
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
