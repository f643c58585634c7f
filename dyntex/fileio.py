"""Writing files so that a crash never leaves a half-written one: write beside, then rename.

Every output file dyntex writes (checkpoints, config, videos, images, benchmark tables) goes
through :func:`atomic_path` (``metrics.csv`` is appended a row per iteration and rewritten through
it on resume): the data is written to ``.NAME.XXXXXXXX.tmp`` in the target folder
and renamed over ``NAME`` only when complete (``os.replace`` is atomic on one file system).
A temporary file left by a process killed mid-write is removed by
:func:`dyntex.runfolder.remove_stale_temps` when a run starts or resumes.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import OutputError

TEMP_SUFFIX = ".tmp"


def reason(e: BaseException) -> str:
    """A short one-line reason from an exception (``strerror`` when it has one)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())


@contextmanager
def atomic_path(path: str | os.PathLike, errors: tuple[type[BaseException], ...] = (OSError,)
                ) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file is removed whatever happens. ``errors`` raised in the block (or by the
    rename) become one-line :class:`~dyntex.errors.OutputError`\\ s; anything else propagates.
    """
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {parent}: {reason(e)}") from e
    if path.is_dir():
        raise OutputError(f"cannot write {path}: a folder is in the way")
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    try:
        yield tmp
        os.replace(tmp, path)
    except errors as e:
        raise OutputError(f"cannot write {path}: {reason(e)}") from e
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def save_npy(path: str | os.PathLike, array) -> Path:
    """``array`` as a ``.npy`` file, as it is (no value mapping), written atomically."""
    import numpy as np

    def write(p: Path) -> None:
        with p.open("wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)
    return Path(path)
