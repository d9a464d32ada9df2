"""What "on disk" means for the relay's queue and the store's maildirs (DESIGN: Durability)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

# File systems whose fsync of a new file also makes durable the name it was created
# or renamed to before that fsync. ext4 with a journal commits the rename in the
# transaction the fsync waits for; without one, ext4_sync_parent() writes the
# directory of a file created since its last fsync (Linux commit 14ece1028b3e,
# "ext4: Make fsync sync new parent directories in no-journal mode").
_NAME_WITH_FILE = frozenset({"ext4"})
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo's escapes of space, tab, LF, backslash


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` survive a crash: fsync the directory."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_system(path: Path) -> str:
    """The type of the file system ``path`` is on."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return mount_type(os.path.realpath(path), f)


def mount_type(target: str, mountinfo: Iterable[str]) -> str:
    """The type of the mount holding ``target`` (a real path) by the lines of
    /proc/PID/mountinfo (proc(5)): the longest matching mount point, the later of
    two alike (it hides the earlier)."""
    best, kind = -1, ""
    for line in mountinfo:
        fields, _, rest = line.partition(" - ")
        point = _OCTAL.sub(lambda m: chr(int(m[1], 8)), fields.split(" ")[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, kind = len(point), rest.split(" ", 1)[0]
    return kind


def new_names_need_dir_fsync(path: Path) -> bool:
    """Whether a file created in ``path``, renamed, then fsynced still needs the
    directory fsynced for its name to survive a power loss."""
    try:
        return file_system(path) not in _NAME_WITH_FILE
    except OSError:  # no /proc: assume the worst
        return True
