"""Durable file writes: a finished file is either there whole or not at all, also after a kill or power loss.

Every write goes to a temporary name in the same folder, is flushed and fsync-ed, renamed over the target,
and the folder is fsync-ed so the rename itself survives a power cut. Folders are removed by renaming them
out of the way first, so a kill mid-delete never leaves a half-deleted folder under the real name.

Crash tests: `crash_point(name)` marks a moment where a kill must lose nothing. When the environment
variable SAEKIT_TEST_KILL_AT is `name` (or `name@N`: the N-th time this process reaches it), the process
SIGKILLs itself there; unset, it costs one dictionary lookup. tests/test_crash.py drives it, and the
README's RELIABILITY section lists the points.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor


KILL_ENV = "SAEKIT_TEST_KILL_AT"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process here when SAEKIT_TEST_KILL_AT names this point (see the module docstring)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or creation inside `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def replace(src: str | Path, dst: str | Path) -> None:
    """Rename `src` over `dst` (both in one folder) and make the rename durable."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    replace(tmp, path)


def write_json(obj: Any, path: str | Path) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_tensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors.save_file, durably: the file appears whole under `path` or not at all."""
    path = Path(path)
    tmp = _tmp(path)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    fsync_file(tmp)
    crash_point("save_tensors.before_rename")
    replace(tmp, path)


def remove_tree(path: str | Path) -> None:
    """Delete a folder so that a kill at any moment leaves it either whole (under its name) or gone."""
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(path, doomed)
    fsync_dir(path.parent)
    crash_point("remove_tree.after_rename")
    shutil.rmtree(doomed, ignore_errors=True)


def remove(path: str | Path) -> None:
    """Delete one file if it exists, durably (the folder's entry is synced)."""
    path = Path(path)
    if path.exists():
        path.unlink()
        fsync_dir(path.parent)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the `.<name>.tmp-<pid>` files in `folder` left by writers that were killed (their process
    is gone); returns what was deleted. A live process's temporary file is left alone."""
    gone = []
    for tmp in Path(folder).glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(path: str | Path) -> None:
    """Delete what killed `remove_tree` calls on `path` left behind (`.<name>.deleting-<pid>` folders)."""
    path = Path(path)
    for doomed in path.parent.glob(f".{path.name}.deleting-*"):
        shutil.rmtree(doomed, ignore_errors=True)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file and folder under `folder` (and `folder` itself), before it is renamed into place."""
    folder = Path(folder)
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)
