"""One control loop per store: an exclusive advisory lock on ``<db>.control-loop.lock``.

Several control plane processes may share one store (intake is safe across processes: stock
is taken by conditional decrement, writes take SQLite's write lock), but the control loop must
run in one of them only: each would raise its own SLA alerts and audit its own level changes
for the same orders and kitchens. The process holding this lock (``flock``, released by the
kernel when the process dies) runs the loop; the others stand by and try again every interval,
so one takes over when the holder goes away.

>>> lock = LoopLock.beside(Path("/var/lib/brigade/cp.db"))          # doctest: +SKIP
>>> lock.try_acquire()                                             # doctest: +SKIP
True
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from control_plane.errors import StoreError

SUFFIX = ".control-loop.lock"


class LoopLock:
    """An exclusive, non-blocking ``flock`` on one file, held until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def beside(cls, db_path: Path) -> LoopLock:
        """The lock of the store at ``db_path``."""
        return cls(db_path.with_name(db_path.name + SUFFIX))

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if no one else (another process, or another :class:`LoopLock` on the
        same file) holds it; True if held now."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the control-loop lock {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc}") from exc
        # Who holds it, for a person looking (the lock itself is the flock, not this).
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Let another process run the loop (closing the file releases the flock)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
