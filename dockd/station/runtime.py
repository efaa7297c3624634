"""Process-level plumbing: the data-dir lock, sd_notify, and the state hook."""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import subprocess
import threading
from pathlib import Path

from dockd.core.errors import QueueLocked


def _log():
    """The module's logger, made on first use: importing structlog costs ~0.1 s, and `dockd status` loads
    this module only for the data-dir lock."""
    import structlog

    return structlog.get_logger("dockd.runtime")


class DataDirLock:
    """An exclusive flock on ``data_dir/dockd.lock``: one dockd (daemon or import) per data dir."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "dockd.lock"
        self.fd = -1

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise QueueLocked(self.path.parent, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> int | None:
        """PID of the process holding the lock, or None if free (for status/doctor)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                txt = os.pread(fd, 32, 0).decode(errors="replace").strip()
                return int(txt) if txt.isdigit() else -1
            return None
        finally:
            os.close(fd)


def sd_notify(*lines: str) -> bool:
    """Send ``READY=1`` / ``STATUS=...`` / ``WATCHDOG=1`` to systemd if it is listening."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(lines).encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of systemd's watchdog timeout, if this process is the one being watched."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def run_hook(command: str, timeout_s: float, *args: str) -> None:
    """Run the ``[hooks] on_state`` command in the background; never blocks or raises."""
    if not command:
        return

    def go() -> None:
        try:
            r = subprocess.run(shlex.split(command) + list(args), timeout=timeout_s, capture_output=True,
                               stdin=subprocess.DEVNULL, check=False)
            if r.returncode != 0:
                _log().warning("state hook failed", command=command, args=args, rc=r.returncode,
                            stderr=r.stderr.decode(errors="replace")[-300:])
        except subprocess.TimeoutExpired:
            _log().warning("state hook timed out", command=command, args=args, timeout_s=timeout_s)
        except OSError as e:
            _log().warning("state hook could not run", command=command, error=str(e))

    threading.Thread(target=go, name="hook", daemon=True).start()
