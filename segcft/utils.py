"""Small shared helpers: the project's input error, atomic file output and seeding."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(ValueError):
    """Bad user input (a file, a field, a value); the message names what is wrong."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file: on error the temporary file is removed.
    The temporary name keeps the suffix so writers that dispatch on it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs follow the user's umask
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; move its contents into ``out`` on success.

    Multi-file outputs (a datalist with its images) appear all at once or not at all:
    on error the staging folder is removed and ``out`` is left as it was. Entries of
    ``out`` with the same names as staged ones are replaced.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for child in sorted(staging.iterdir()):
            dest = out / child.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(child, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse the JSON file ``path``; if it is missing or malformed, an :class:`InputError` names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"{path}: {what} not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that the same seed gives the same figures."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
