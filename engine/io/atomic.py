"""Atomic writes: a file appears whole or not at all, and a killed writer's temp file
can be told from a live one's.  Outputs (the CLI's files, the Pillow plugin's saves,
build manifests, bench results) and checkpoints all write through here."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)     # elsewhere: the classic set-and-restore
    os.umask(old)
    return old


# Temp files are ``.NAME.PID-XXXXXXXX.tmp``: the writer's process id lets a later run
# remove the temps of writers that are gone (a SIGKILL leaves one behind) and leave
# those of a live writer alone (:func:`stale_temps`).
TEMP = re.compile(r"\..*\.(\d+)-[a-z0-9_]{8}\.tmp")


def _temp_prefix(name: str, folder: Path) -> str:
    """``.NAME.PID-`` shortened so that the temp name (+ 8 random characters + ``.tmp``)
    fits the folder's file-name limit: an output whose own name fits must not fail on
    its temp."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    pid = f"{os.getpid()}-"
    room = max(1, limit - len(".") - len(".") - len(pid) - 8 - len(".tmp"))
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}.{pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True               # someone else's live process (or cannot tell): keep its temp
    return True


def stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Temp files of :func:`atomic_write_bytes` in ``folder`` whose writer process is
    gone (killed between writing and renaming): safe to remove."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for n in names:
        m = TEMP.fullmatch(n)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            out.append(Path(folder) / n)
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None, replace: bool = True) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file.
    The file gets ``mode``, else the mode a plain open() would give it (0666 less the
    umask), not mkstemp's 0600.  ``replace=False``: publish only if ``path`` does not
    exist, atomically (a hard link, where the file system has them), else
    FileExistsError with ``path`` untouched -- two writers cannot both think they wrote
    it.  The temp file is removed on any exception (SIGINT, and SIGTERM where the
    program turns it into one, as the CLI does)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name, path.parent), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), (0o666 & ~current_umask()) if mode is None else mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)            # fails with FileExistsError if path exists
        except FileExistsError:
            raise
        except OSError:                   # no hard links here: check, then rename (a small window)
            if os.path.lexists(path):
                raise FileExistsError(17, "File exists", str(path)) from None
            os.replace(tmp, path)
            return
        os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
