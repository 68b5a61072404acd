"""One `aigi run` per run directory: a lock file naming its holder (host, pid, start time).

The lock file is written whole under a temporary name and published with a hard link, which fails
when the lock exists (atomic on local filesystems and on NFS), so two runs started together cannot
both take it and nobody ever reads a half-written lock. A lock left by a process that no longer exists on this host
(SIGKILL, a crash) is stale and taken over, with a line saying so. A lock held from another host
cannot be checked from here: the message names the holder and the file to delete if it is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

LOCK_NAME = ".aigi.lock"


class RunLocked(RuntimeError):
    """Another aigi run holds the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder_text(holder: dict) -> str:
    if not holder:
        return "an unknown holder (the lock file is unreadable)"
    return f"aigi pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"


@contextlib.contextmanager
def run_lock(root: str | os.PathLike, stream: TextIO | None = None) -> Iterator[Path]:
    """Hold the run directory's lock for the body; release it on any exit but SIGKILL."""
    stream = stream or sys.stdout
    path = Path(root) / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv}
    from aigi.core.atomic import temp_path

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(json.dumps(me), encoding="utf-8")
    try:
        for _ in range(3):
            try:
                # a hard link publishes the complete file or fails if one is there: never a torn lock
                os.link(tmp, path)
                break
            except FileExistsError:
                holder = _read(path)
                if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    stream.write(f"{path}: taking over a stale lock ({_holder_text(holder)}, no longer running)\n")
                    path.unlink(missing_ok=True)
                    continue
                raise RunLocked(
                    f"{Path(root)}: in use by {_holder_text(holder)}. Wait for it to finish; if that process "
                    f"is gone (its machine rebooted), delete {path}"
                ) from None
        else:
            raise RunLocked(f"{path}: could not take the lock (other runs keep taking it)")
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield path
    finally:
        if _read(path) == me:
            path.unlink(missing_ok=True)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
