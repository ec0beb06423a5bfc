"""A full disk as one clear error: which file could not be written, on which file system, how much is free, and
how to go on, instead of the repeated tracebacks of every thread that was writing (the checkpointer's, the logs')."""

from __future__ import annotations

import contextlib
import errno
import pathlib
import shutil
from collections.abc import Iterator

from bitune_jax.train.checkpointing import exception_chain


class DiskFullError(OSError):
    """No space left where the run writes; the run stopped and resumes with the same command once there is."""


def _free(path: pathlib.Path) -> str:
    for p in (path, *path.parents):
        if p.exists():
            return f"{shutil.disk_usage(p).free / 2**30:.2f} GiB free there now"
    return "free space unknown"


@contextlib.contextmanager
def disk_full_reported(workdir: pathlib.Path) -> Iterator[None]:
    """Turn an ENOSPC anywhere in a raised error's chain (orbax and tensorstore wrap it) into one `DiskFullError`."""
    try:
        yield
    except Exception as e:
        full = next((x for x in exception_chain(e) if isinstance(x, OSError) and x.errno == errno.ENOSPC), None)
        if full is None:
            raise
        where = pathlib.Path(full.filename) if full.filename else workdir
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on the device while writing {where} ({_free(where)}); the run stopped. Free space or "
            f"move {workdir} to a larger disk, then rerun the same command: it resumes from its newest checkpoint",
        ) from None
