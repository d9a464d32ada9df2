"""One user's Maildir++ on disk: folders as ``.Name`` directories, each with
cur/new/tmp, and the durable write (tmp, fsync, rename, fsync dir) every delivery uses.

Flags and UIDs live in the index (``index.py``), not in file names, so a flag change
never renames a file; the file names stay unique and stable for the index to point at.

Files hold LF line ends, as other Maildir readers (mutt, Dovecot) expect; ``read``
serves the CRLF form the protocols speak (RFC 5322 §2.3), and the index keeps that
form's size. Files written with CRLF by older versions read the same.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from pathlib import Path

from mxlab.nodes.durable import fsync_dir

INBOX = "INBOX"
SEPARATOR = "."  # Maildir++ hierarchy separator, also the IMAP one we announce
_SUBDIRS = ("cur", "new", "tmp")
_counter = itertools.count()


def to_disk(data: bytes) -> bytes:
    """CRLF -> LF for the file (``data`` is the CRLF form a protocol received)."""
    return data.replace(b"\r\n", b"\n")


def from_disk(data: bytes) -> bytes:
    """LF (or CRLF, from files written before LF storage) -> CRLF: two C-speed passes,
    no regex, since every FETCH of a body goes through here."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class BadFolderName(ValueError):
    """A mailbox name that cannot be a Maildir++ folder."""


def check_folder_name(name: str) -> None:
    """Refuse names that would escape the maildir or leave an empty hierarchy level,
    and the LIST wildcards (RFC 3501 §5.1: a name with them could never be listed
    alone; Dovecot refuses them too)."""
    parts = name.split(SEPARATOR)
    if not name or any(c in name for c in "/\x00%*") or any(p in ("", "..") for p in parts):
        raise BadFolderName(name)


class Maildir:
    """The files of one user's mail; knows nothing of UIDs or flags."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")

    def folder_dir(self, name: str) -> Path:
        """Maildir++: INBOX is the root, every other folder is ``.Name`` below it."""
        if name.upper() == INBOX:
            return self.root
        check_folder_name(name)
        return self.root / f".{name}"

    def create_folder(self, name: str) -> None:
        base = self.folder_dir(name)
        for sub in _SUBDIRS:
            (base / sub).mkdir(parents=True, exist_ok=True)
        if base != self.root:
            (base / "maildirfolder").touch()  # Maildir++ marks subfolders so

    def folders_on_disk(self) -> list[str]:
        """Folder names found on disk, INBOX first."""
        names = [INBOX] if (self.root / "cur").is_dir() else []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                if entry.name.startswith(".") and (entry / "cur").is_dir():
                    names.append(entry.name[1:])
        return names

    def deliver(self, folder: str, data: bytes, mtime: float | None = None) -> str:
        """Write a message durably; return its path relative to the folder, so a
        folder rename leaves the index's paths valid.

        tmp -> fsync -> rename into new -> fsync new/: once this returns, a crash
        cannot lose the message (the delivery contract behind "250 OK").
        """
        base = self.folder_dir(folder)
        served = len(data)
        data = to_disk(data)
        now = time.time()
        # S= the file's size, W= the CRLF size (the Dovecot convention)
        unique = (
            f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}Q{next(_counter)}"
            f".{self._host},S={len(data)},W={served}"
        )
        tmp = base / "tmp" / unique
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        final = base / "new" / unique
        os.rename(tmp, final)
        fsync_dir(base / "new")
        return f"new/{unique}"

    def files(self, folder: str) -> list[str]:
        """Every message file of a folder (new and cur), relative to the folder."""
        base = self.folder_dir(folder)
        found: list[str] = []
        for sub in ("new", "cur"):
            d = base / sub
            if d.is_dir():
                found += [f"{sub}/{n}" for n in os.listdir(d)]
        return found

    def read(self, folder: str, relpath: str) -> bytes:
        """The message as served: CRLF line ends whatever the file holds."""
        return from_disk((self.folder_dir(folder) / relpath).read_bytes())

    def mtime(self, folder: str, relpath: str) -> float:
        return (self.folder_dir(folder) / relpath).stat().st_mtime

    def remove(self, folder: str, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder_dir(folder) / relpath)

    def delete_folder(self, name: str) -> None:
        import shutil  # here: it brings bz2 and lzma (0.5 MiB RSS) for a rare DELETE

        shutil.rmtree(self.folder_dir(name), ignore_errors=True)

    def rename_folder(self, old: str, new: str) -> None:
        os.rename(self.folder_dir(old), self.folder_dir(new))
