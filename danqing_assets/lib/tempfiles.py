"""Temporary files and folders, named after the process that owns them, so the ones a killed process left are found.

Every writer of the warehouse, the image store and a step's scratch space writes under a temporary name and renames
into place, so no reader sees half a file. A process killed mid-write (SIGKILL, the OOM killer, a lost machine)
cannot remove its temporary, so the rule for those is:

- a temporary's name is hidden and carries its owner: `.<base>.<random>.<pid>@<host>.tmp`; readers never read such
  names (the warehouse views glob `*.parquet`, the image store looks up `ab/cd/<sha256>`);
- the next writer of the same folder (the same table partition, the image store, the scratch folder) removes those
  whose owner is gone: written on this host by a process that no longer runs. Temporaries of a live process, or of
  another host sharing the folder, are left to their owner.

A killed run's leftovers are therefore cleaned by its re-run; those of a folder never written again stay, hidden.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRATCH_DIR = ".scratch"
"""The warehouse home's folder for scratch files (stages' spill and part files, the what-if's)."""

_OWNED = re.compile(r"^\..+\.[0-9a-f]{12}\.(\d+)@([A-Za-z0-9_.-]+)\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"


def temp_name(base: str) -> str:
    """A hidden temporary name for `base`, owned by this process: `.<base>.<random>.<pid>@<host>.tmp`."""
    return f".{base}.{uuid.uuid4().hex[:12]}.{os.getpid()}@{_host()}.tmp"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed process nobody has reaped yet is gone too
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_orphan(name: str) -> bool:
    """Whether `name` is a temporary (see `temp_name`) whose owner, on this host, no longer runs."""
    m = _OWNED.match(name)
    return bool(m) and m.group(2) == _host() and not _running(int(m.group(1)))


def remove_orphans(folder: str | os.PathLike[str]) -> int:
    """Remove the temporaries in `folder` (files or folders) left by processes of this host that no longer run;
    return how many. A missing folder has none."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not is_orphan(entry.name):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:  # removed meanwhile by another writer of the folder, or not ours to remove: a leftover
            pass  # must never fail the write that came to clean it
    return removed


@contextmanager
def scratch_dir(parent: str | os.PathLike[str], base: str) -> Iterator[Path]:
    """A fresh temporary folder in `parent` for one step's intermediate files, removed on exit; the folders of killed
    processes in `parent` are removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(parent)
    path = parent / temp_name(base)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
