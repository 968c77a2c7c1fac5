"""One writer per run directory: an exclusive lock on WORKDIR/.lock.

Training and fine-tuning hold it (`fcntl.flock`, exclusive, non-blocking) for as
long as they may write to the directory; the file holds the holder's pid. A second
writer stops with a UserError naming that pid. Readers (sampling, evaluation)
take no lock and are never blocked.

The kernel releases a flock when its holder exits, however it exits (kill -9
included), so a lock is never stale: what a dead process leaves behind is only the
file with its pid, and the next writer takes the file over (and says so). A clean
release removes the file.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os

from agan_jax.errors import UserError

LOCK_FILE = ".lock"

# errno values that mean "this directory cannot be written".
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class NotWritable(UserError):
    """The run directory cannot be written (permissions, read-only file system)."""


class Locked(UserError):
    """Another process holds the run directory's lock; `pid` is its pid (None
    when the lock file does not say)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def holder(workdir: str) -> int | None:
    """The pid of the process holding `workdir`'s lock, or None when none holds it."""
    path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    finally:
        os.close(fd)  # also drops the shared lock taken just above
    return None


class RunLock:
    """The exclusive lock of one run directory (a context manager).

    `acquire` creates the directory if needed; raises `NotWritable` when it cannot
    be written and a UserError naming the holder's pid when another process holds
    the lock. `what`: the holder's activity, for messages ('training').
    """

    def __init__(self, workdir: str, what: str = "training"):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self.what = what
        self._fd: int | None = None

    def _not_writable(self, e: OSError) -> NotWritable:
        return NotWritable(
            f"cannot write to the run directory {self.workdir} ({e.strerror}): "
            f"{self.what} writes its checkpoints there; make it writable, or copy "
            "the run to a writable place and pass that as --workdir"
        )

    def acquire(self) -> RunLock:
        try:
            os.makedirs(self.workdir, exist_ok=True)
        except FileExistsError:
            raise UserError(
                f"--workdir {self.workdir} is a file, not a directory; pass a "
                "directory (a new path starts a new run)"
            ) from None
        except OSError as e:
            if e.errno in NOT_WRITABLE:
                raise self._not_writable(e) from None
            raise
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if e.errno in NOT_WRITABLE:
                    raise self._not_writable(e) from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                who = f"pid {pid}" if pid else "another process"
                raise Locked(
                    f"{self.workdir} is in use: {who} holds its lock ({self.path}), "
                    "one writer at a time; wait for it to finish or stop it, or use "
                    "another --workdir",
                    pid,
                ) from None
            # A holder releasing at this moment removes the file after we opened
            # it: then the lock we hold is on a file nobody else will see; retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read_pid(fd)
        if old is not None and old != os.getpid():
            logging.warning(
                "took over %s, left by process %d, which no longer holds it (it was "
                "killed or crashed; the kernel released its lock)",
                self.path,
                old,
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: see `acquire`
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
