"""Writing files and folders so that an interruption never leaves half an output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from panoptic_detr.errors import PanopticDetrError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give the result the usual umask permissions.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    # json.dumps, not json.dump: only dumps uses the C encoder (dump always runs the Python
    # one, ~5x slower on the large annotation files of prepare); the text is the same
    text = json.dumps(obj, indent=indent)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside `path`, then rename it into place.

    An existing `path` is refused unless `overwrite`; it is replaced only once the new
    folder is complete, so an interrupted run leaves the old output (or nothing).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise PanopticDetrError(f"{path}: output exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the folder private (0700)
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(complete: Path, path: Path) -> None:
    """Rename the `complete` folder to `path`; an existing `path` is moved aside first and
    removed only once the new one is in place (a crash in between leaves `.NAME.old`)."""
    if not path.exists():
        os.replace(complete, path)
        return
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        shutil.rmtree(old)
    os.replace(path, old)
    os.replace(complete, path)
    shutil.rmtree(old)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in 4 MB blocks (memory stays flat)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or malformed file into a one-line user error."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise PanopticDetrError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise PanopticDetrError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise PanopticDetrError(f"{path}: not a text (JSON) file") from None
