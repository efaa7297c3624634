"""Giving up Linux capabilities: the daemon keeps none, the mount helper keeps CAP_SYS_ADMIN.

Both stay uid 0. Without capabilities uid 0 is an ordinary owner: it reads and
deletes files whose *owner* bits allow it (its data dir, the camera volumes,
which vfat/exFAT present as owned by the mounting uid 0), but it cannot mount,
override permissions, trace, load modules or change identity.

:func:`limit_to` sets ``PR_SET_NO_NEW_PRIVS`` (an exec'd child, such as a
state hook, can never gain capabilities back: for uid 0 execve would
otherwise grant the whole bounding set), drops the rest of the bounding set
when it may (CAP_SETPCAP), clears the ambient set and then capset()s the
effective/permitted sets down to ``keep`` and the inheritable set to nothing.
Capabilities belong to threads: it must run before the process starts any,
and it checks every thread afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from .errors import DockdError

CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21
PR_CAPBSET_READ, PR_CAPBSET_DROP = 23, 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(DockdError):
    """could not drop privileges: {} (to run without privilege separation set [sources] drop_privileges = false)"""


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        _libc.capset.argtypes = [ctypes.POINTER(_Header), ctypes.POINTER(_Data)]
    return _libc


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    r = _c().prctl(option, arg2, arg3, 0, 0)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def status(pid: int | str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of ``pid`` (its main thread) from /proc, as integers."""
    return _parse(Path(f"/proc/{pid}/status").read_text())


def _parse(text: str) -> dict[str, int]:
    return {k: int(v.strip(), 16) for k, _, v in (line.partition(":") for line in text.splitlines())
            if k.startswith("Cap")}


def has(cap: int) -> bool:
    return bool(status()["CapEff"] >> cap & 1)


def last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def limit_to(keep: frozenset[int] = frozenset()) -> dict[str, int]:
    """Keep only ``keep`` (effective + permitted) in every thread of this process; returns /proc's view."""
    want = sum(1 << c for c in keep)
    try:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if has(CAP_SETPCAP):
            for cap in range(last_cap() + 1):
                if cap not in keep and _prctl(PR_CAPBSET_READ, cap) == 1:
                    _prctl(PR_CAPBSET_DROP, cap)
        try:
            _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        except OSError as e:
            if e.errno != errno.EINVAL:  # kernels before 4.3 have no ambient set
                raise
        mask = want & status()["CapPrm"]
        hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_Data * 2)(_Data(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0), _Data(mask >> 32, mask >> 32, 0))
        if _c().capset(ctypes.byref(hdr), data) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"capset: {os.strerror(e)}")
    except OSError as e:
        raise PrivilegeError(e.strerror or str(e)) from None
    for task in Path("/proc/self/task").iterdir():
        caps = _parse((task / "status").read_text())
        if caps["CapEff"] & ~want or caps["CapPrm"] & ~want:
            raise PrivilegeError(f"thread {task.name} still holds capabilities {caps['CapEff']:016x}")
    return status()
