"""umockdev testbed for the venv-side tests: fake udev block devices, REAL pyudev in a child.

Route (verified on Debian bookworm, umockdev 0.17.16, systemd-libudev 252, pyudev 0.24):

* The project venv (pyenv python) cannot import ``gi``; the system python has
  python3-gi + gir1.2-umockdev-1.0. So the testbed lives in a small DRIVER
  process, ``umockdev-wrapper /usr/bin/python3 tests/support/udevbed_driver.py``,
  controlled over stdin/stdout JSON lines by :class:`UdevBed`.
* The driver MUST run under the preload (umockdev-wrapper): without it
  ``uevent()`` fails with "uevent_sender_send: No such device" and parented
  ``add_device`` fails with "parent device ... does not exist".
* The child under test (daemon; any process, need not descend from the driver)
  gets ``LD_PRELOAD=libumockdev-preload.so.0`` and ``UMOCKDEV_DIR=<testbed root>``
  (:meth:`UdevBed.child_env` / :meth:`UdevBed.spawn`). Its real pyudev then
  sees only testbed devices in /sys (``Context().list_devices(subsystem='block')``
  lists devices added before it started: cold-plug works), and its
  ``Monitor.from_netlink(ctx, 'udev')`` receives the driver's uevents,
  BPF/subsystem filtering included. Note UMOCKDEV_DIR is set by the testbed
  via g_setenv and is NOT visible in the driver's os.environ: pass it explicitly.
* /dev is only redirected for nodes that exist in the testbed (none are
  created), so DEVNAME=/dev/loopN is the REAL loop device: the child, and the
  ``mount``/``mount.exfat-fuse`` it runs (which inherit the preload), can mount it.

Gotchas: the child sees no real /sys at all while preloaded. Enumerated devices
have ``is_initialized == False`` (no udev db: /run/udev is not redirected);
devices from the monitor have ``is_initialized == True``. A uevent sent before
the child's monitor is started is lost (as with real netlink): wait for the
child's readiness. umockdev links block devices under /sys/dev/char; the driver
moves the link to /sys/dev/block so ``pyudev.Devices.from_device_file`` works.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MONITOR_CHILD_SOURCE",
    "Camera",
    "JsonLines",
    "UdevBed",
    "UdevBedError",
    "driver_python",
    "udevbed_available",
]

DRIVER = Path(__file__).with_name("udevbed_driver.py")
PRELOAD = "libumockdev-preload.so.0"
DEFAULT_ID_PATH = "pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0"


class UdevBedError(RuntimeError):
    pass


_GI_CHECK = "import gi; gi.require_version('UMockdev', '1.0'); from gi.repository import UMockdev"


@functools.cache
def driver_python() -> str | None:
    """An interpreter that can import gi + UMockdev-1.0: $DOCKD_UDEVBED_PYTHON or /usr/bin/python3."""
    candidates = [os.environ.get("DOCKD_UDEVBED_PYTHON"), "/usr/bin/python3", "/usr/local/bin/python3",
                  shutil.which("python3")]
    for c in candidates:
        if not c or not os.access(c, os.X_OK):
            continue
        try:
            r = subprocess.run([c, "-c", _GI_CHECK], capture_output=True, timeout=30,
                               env=_clean_env())
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return c
    return None


def _clean_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    # Don't leak the venv into the system python.
    for k in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "UMOCKDEV_DIR"):
        env.pop(k, None)
    return env


def _preload_present() -> bool:
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib"):
        if os.path.exists(os.path.join(d, PRELOAD)):
            return True
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return PRELOAD in out


def udevbed_available() -> tuple[bool, str]:
    """(True, "") if a testbed can be driven here; else (False, reason) for pytest.skip."""
    if not _preload_present():
        return False, f"{PRELOAD} not found (apt-get install umockdev)"
    if driver_python() is None:
        return False, "no python with gi + UMockdev-1.0 typelib (apt-get install python3-gi gir1.2-umockdev-1.0)"
    return True, ""


# --------------------------------------------------------------------------- JSON lines

class JsonLines:
    """Background reader of a process's stdout as JSON lines (non-JSON lines are kept as {"raw": line})."""

    def __init__(self, stream, name: str = "child"):
        self.name = name
        self.q: queue.Queue = queue.Queue()
        self.history: list[dict] = []
        self._t = threading.Thread(target=self._pump, args=(stream,), daemon=True, name=f"jsonlines-{name}")
        self._t.start()

    def _pump(self, stream) -> None:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"raw": line}
            self.q.put(obj)
        self.q.put(None)  # EOF

    def next(self, timeout: float = 10.0) -> dict:
        try:
            obj = self.q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no output within {timeout}s; seen {self.history[-5:]}") from None
        if obj is None:
            self.q.put(None)
            raise EOFError(f"{self.name}: output closed; seen {self.history[-5:]}")
        self.history.append(obj)
        return obj

    def wait_for(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no matching line within {timeout}s; seen {self.history[-5:]}")
            obj = self.next(left)
            if pred(obj):
                return obj

    def drain(self, wait: float = 0.0) -> list[dict]:
        """Everything available now (after waiting ``wait`` seconds)."""
        if wait:
            time.sleep(wait)
        out = []
        while True:
            try:
                obj = self.q.get_nowait()
            except queue.Empty:
                return out
            if obj is None:
                self.q.put(None)
                return out
            self.history.append(obj)
            out.append(obj)


# Tiny stand-in for the daemon: cold-plug enumeration + block monitor, JSON lines.
MONITOR_CHILD_SOURCE = r'''
import json, sys, pyudev

def dump(d):
    usb = d.find_parent("usb", "usb_device")
    return {
        "sys_path": d.sys_path, "sys_name": d.sys_name, "subsystem": d.subsystem,
        "device_type": d.device_type, "device_node": d.device_node,
        "device_number": d.device_number, "is_initialized": d.is_initialized,
        "properties": dict(d.properties),
        "usb_parent": None if usb is None else {
            "sys_path": usb.sys_path,
            "attributes": {k: usb.attributes.asstring(k) for k in ("idVendor", "idProduct", "serial")
                           if k in usb.attributes.available_attributes},
        },
    }

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()

ctx = pyudev.Context()
out({"event": "enumerated", "devices": [dump(d) for d in ctx.list_devices(subsystem="block")]})
mon = pyudev.Monitor.from_netlink(ctx, source="udev")
mon.filter_by("block")
mon.start()
out({"event": "ready"})
for dev in iter(mon.poll, None):
    rec = dump(dev); rec["event"] = "uevent"; rec["action"] = dev.action
    out(rec)
'''


# --------------------------------------------------------------------------- camera model

@dataclass
class Camera:
    """Sysfs chain of one fake USB mass-storage camera (syspaths in add order)."""
    serial: str
    devname: str                 # disk node, e.g. /dev/loop3
    fs_devname: str              # node holding the exFAT (disk, or its partition)
    usb_syspath: str
    interface_syspath: str
    scsi_syspath: str
    disk_syspath: str
    part_syspath: str | None = None
    fs_props: dict[str, str] = field(default_factory=dict)   # properties of the exFAT-bearing node

    @property
    def block_syspath(self) -> str:
        """Syspath of the exFAT-bearing block device (partition if any, else disk)."""
        return self.part_syspath or self.disk_syspath

    @property
    def syspaths(self) -> list[str]:
        sp = [self.usb_syspath, self.interface_syspath, self.scsi_syspath, self.disk_syspath]
        return sp + ([self.part_syspath] if self.part_syspath else [])


def _devnum(node: str) -> tuple[int, int]:
    st = os.stat(node)
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _sectors(node: str) -> int:
    try:
        with open(node, "rb") as f:
            return f.seek(0, os.SEEK_END) // 512
    except OSError:
        return 0


def _usb_port_path(port: str) -> str:
    # "1.2" -> "usb1/1-1/1-1.2" (hub on root port 1, device on its port 2)
    parts = port.split(".")
    comps = ["usb1"] + ["1-" + ".".join(parts[: i + 1]) for i in range(len(parts))]
    return "/".join(comps)


# --------------------------------------------------------------------------- the bed

class UdevBed:
    """A umockdev testbed run by a driver process; spawn children that see it.

    Use as a context manager (or call ``close()``): it kills spawned children,
    stops the driver and removes the testbed directory.
    """

    def __init__(self, *, python: str | None = None, timeout: float = 15.0):
        self.python = python
        self.timeout = timeout
        self.root: str = ""
        self._proc: subprocess.Popen | None = None
        self._replies: JsonLines | None = None
        self._stderr: list[str] = []
        self._children: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._hosts = 0

    # lifecycle -------------------------------------------------------------
    def start(self) -> UdevBed:
        py = self.python or driver_python()
        if py is None:
            raise UdevBedError(udevbed_available()[1])
        env = _clean_env()
        wrapper = shutil.which("umockdev-wrapper")
        if wrapper:
            argv = [wrapper, py, "-u", str(DRIVER)]
        else:  # umockdev-wrapper is just: env LD_PRELOAD=libumockdev-preload.so.0:$LD_PRELOAD "$@"
            env["LD_PRELOAD"] = ":".join(filter(None, [PRELOAD, env.get("LD_PRELOAD")]))
            argv = [py, "-u", str(DRIVER)]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd="/",
        )
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        self._replies = JsonLines(self._proc.stdout, "udevbed-driver")
        try:
            hello = self._replies.next(self.timeout)
        except (TimeoutError, EOFError) as e:
            self.close()
            raise UdevBedError(f"driver did not start: {e}; stderr: {self.driver_stderr}") from None
        if not hello.get("ready"):
            self.close()
            raise UdevBedError(f"driver said {hello}; stderr: {self.driver_stderr}")
        self.root = hello["root"]
        return self

    def _pump_stderr(self) -> None:
        assert self._proc and self._proc.stderr
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    @property
    def driver_stderr(self) -> str:
        return "\n".join(self._stderr[-20:])

    def close(self) -> None:
        for c in self._children:
            if c.poll() is None:
                c.terminate()
        for c in self._children:
            try:
                c.wait(5)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait(5)
        self._children.clear()
        p = self._proc
        if p is not None:
            if p.poll() is None:
                try:
                    p.stdin.write('{"cmd": "quit"}\n')
                    p.stdin.flush()
                    p.wait(5)
                except (OSError, ValueError, subprocess.TimeoutExpired):
                    p.kill()
                    p.wait(5)
            for s in (p.stdin, p.stdout, p.stderr):
                try:
                    s.close()
                except OSError:
                    pass
            self._proc = None
        if self.root and os.path.isdir(self.root) and re.search(r"/umockdev\.[^/]+$", self.root):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> UdevBed:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # raw testbed ops --------------------------------------------------------
    def _call(self, cmd: str, **kw: Any) -> dict:
        if self._proc is None or self._proc.poll() is not None:
            raise UdevBedError(f"driver not running; stderr: {self.driver_stderr}")
        with self._lock:
            self._proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
            self._proc.stdin.flush()
            try:
                rep = self._replies.next(self.timeout)
            except (TimeoutError, EOFError) as e:
                raise UdevBedError(f"{cmd}: {e}; stderr: {self.driver_stderr}") from None
        if not rep.get("ok"):
            raise UdevBedError(f"{cmd} {kw}: {rep.get('error')}; stderr: {self.driver_stderr}")
        return rep

    def add_device(self, subsystem: str, name: str, parent: str | None = None,
                   attrs: Mapping[str, Any] | None = None, props: Mapping[str, Any] | None = None) -> str:
        """umockdev add_device; ``name`` is relative to ``parent`` (or /sys/devices). Returns the syspath.

        NOTE: umockdev emits an 'add' uevent for the new device by itself.

        A block device with a ``dev`` attribute ("M:m") also gets /sys/dev/block/M:m.
        No /dev node is created: DEVNAME refers to the real node.
        """
        return self._call("add", subsystem=subsystem, name=name, parent=parent,
                          attrs={k: str(v) for k, v in (attrs or {}).items()},
                          props={k: str(v) for k, v in (props or {}).items()})["syspath"]

    def uevent(self, syspath: str, action: str = "add") -> None:
        self._call("uevent", syspath=syspath, action=action)

    def remove_device(self, syspath: str) -> None:
        """Remove the sysfs dir (and children); sends NO 'remove' uevent (use ``uevent`` first)."""
        self._call("remove", syspath=syspath)

    def set_property(self, syspath: str, name: str, value: Any) -> None:
        self._call("set_property", syspath=syspath, name=name, value=str(value))

    def set_attribute(self, syspath: str, name: str, value: Any) -> None:
        self._call("set_attribute", syspath=syspath, name=name, value=str(value))

    # children ---------------------------------------------------------------
    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a process that must see the testbed (LD_PRELOAD + UMOCKDEV_DIR)."""
        if not self.root:
            raise UdevBedError("testbed not started")
        env = dict(os.environ if base is None else base)
        pre = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "umockdev" not in p]
        env["LD_PRELOAD"] = ":".join([PRELOAD, *pre])
        env["UMOCKDEV_DIR"] = self.root
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              **popen_kwargs: Any) -> subprocess.Popen:
        """Popen ``argv`` inside the testbed (env from :meth:`child_env`); killed at ``close()``."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(list(argv), env=self.child_env(env), **popen_kwargs)
        self._children.append(p)
        return p

    def spawn_monitor_child(self, python: str = sys.executable) -> tuple[subprocess.Popen, JsonLines]:
        """Run MONITOR_CHILD_SOURCE (needs pyudev in ``python``); returns (proc, reader).

        First line is {"event": "enumerated", "devices": [...]}, then {"event": "ready"},
        then one {"event": "uevent", "action": ..., "properties": {...}, ...} per block uevent.
        """
        p = self.spawn([python, "-c", MONITOR_CHILD_SOURCE], stdout=subprocess.PIPE, text=True)
        return p, JsonLines(p.stdout, "monitor-child")

    # camera -----------------------------------------------------------------
    def add_usb_camera(
        self,
        devname: str,
        *,
        serial: str,
        fs_uuid: str,
        fs_label: str = "",
        fs_devname: str | None = None,
        vendor_id: str = "2b2e",
        model_id: str = "0c01",
        vendor: str = "Acme",
        model: str = "BodyCam",
        port: str = "1.2",
        host: int | None = None,
        kname: str | None = None,
        extra_props: Mapping[str, Any] | None = None,
    ) -> Camera:
        """Add a USB mass-storage camera whose disk node is the real ``devname``.

        ``fs_devname`` set (e.g. a loop partition /dev/loop3p1): the disk carries a
        DOS label and a DEVTYPE=partition child carries the exFAT properties;
        otherwise the disk itself does (superfloppy). ``kname``: sysfs name of the
        disk (default: basename of ``devname``; must be unique).

        umockdev's add_device itself emits an 'add' uevent for every device, so this
        hot-plugs the chain usb_device, usb_interface, scsi_device, disk[, partition]
        (parents first, like the kernel). Cold plug = call it before the child
        starts listening (the events go nowhere; enumeration finds the devices).
        """
        # Validate first: umockdev aborts the driver (assertion) on duplicate links.
        kname = kname or os.path.basename(devname)
        portpath = _usb_port_path(port)
        if os.path.lexists(os.path.join(self.root, "sys", "class", "block", kname)):
            raise UdevBedError(f"block device {kname!r} already in the testbed (pass kname=...)")
        for node in {devname, fs_devname or devname}:
            if self._node_in_use(node):
                raise UdevBedError(f"{node} is already DEVNAME of a testbed device")
        if os.path.lexists(os.path.join(self.root, "sys", "devices", "pci0000:00", "0000:00:14.0", portpath)):
            raise UdevBedError(f"USB port {port!r} already has a device (pass port=...)")
        if host is None:
            host, self._hosts = self._hosts, self._hosts + 1
        iface = f"{portpath.rsplit('/', 1)[1]}:1.0"
        busport = port  # ID_PATH uses the port path after "usb-0:"
        id_path = f"pci-0000:00:14.0-usb-0:{busport}:1.0-scsi-0:0:0:0"
        id_path_tag = re.sub(r"[^0-9A-Za-z]", "_", id_path)

        usb = self.add_device("usb", f"pci0000:00/0000:00:14.0/{portpath}", None,
                              attrs={"idVendor": vendor_id, "idProduct": model_id, "serial": serial,
                                     "manufacturer": vendor, "product": model, "busnum": "1",
                                     "devnum": str(host + 2), "speed": "480", "removable": "removable",
                                     "bDeviceClass": "00"},
                              props={"DEVTYPE": "usb_device", "DRIVER": "usb",
                                     "PRODUCT": f"{int(vendor_id, 16):x}/{int(model_id, 16):x}/100",
                                     "TYPE": "0/0/0", "BUSNUM": "001", "DEVNUM": f"{host + 2:03d}",
                                     "ID_VENDOR_ID": vendor_id, "ID_MODEL_ID": model_id,
                                     "ID_SERIAL_SHORT": serial, "ID_VENDOR": vendor, "ID_MODEL": model,
                                     "ID_SERIAL": f"{vendor}_{model}_{serial}", "ID_BUS": "usb",
                                     "ID_PATH": f"pci-0000:00:14.0-usb-0:{busport}"})
        intf = self.add_device("usb", iface, usb,
                               attrs={"bInterfaceClass": "08", "bInterfaceSubClass": "06",
                                      "bInterfaceProtocol": "50", "bInterfaceNumber": "00"},
                               props={"DEVTYPE": "usb_interface", "DRIVER": "usb-storage",
                                      "PRODUCT": f"{int(vendor_id, 16):x}/{int(model_id, 16):x}/100",
                                      "INTERFACE": "8/6/80"})
        scsi = self.add_device("scsi", f"host{host}/target{host}:0:0/{host}:0:0:0", intf,
                               attrs={"vendor": vendor[:8], "model": model[:16], "type": "0", "rev": "1.00"},
                               props={"DEVTYPE": "scsi_device", "DRIVER": "sd", "MODALIAS": "scsi:t-0x00"})

        common = {
            "ID_VENDOR_ID": vendor_id, "ID_MODEL_ID": model_id, "ID_SERIAL_SHORT": serial,
            "ID_VENDOR": vendor, "ID_VENDOR_ENC": vendor, "ID_MODEL": model, "ID_MODEL_ENC": model,
            "ID_REVISION": "1.00", "ID_SERIAL": f"{vendor}_{model}_{serial}-0:0",
            "ID_TYPE": "disk", "ID_INSTANCE": "0:0", "ID_BUS": "usb", "ID_USB_DRIVER": "usb-storage",
            "ID_USB_INTERFACES": ":080650:", "ID_USB_INTERFACE_NUM": "00",
            "ID_PATH": id_path, "ID_PATH_TAG": id_path_tag,
        }
        fs = {"ID_FS_TYPE": "exfat", "ID_FS_USAGE": "filesystem", "ID_FS_VERSION": "1.0",
              "ID_FS_UUID": fs_uuid, "ID_FS_UUID_ENC": fs_uuid}
        if fs_label:
            fs.update({"ID_FS_LABEL": fs_label, "ID_FS_LABEL_ENC": fs_label})

        maj, mi = _devnum(devname)
        disk_props = {"DEVNAME": devname, "DEVTYPE": "disk", "MAJOR": maj, "MINOR": mi, **common}
        if fs_devname is None:
            disk_props.update(fs)
            disk_props.update(extra_props or {})
        else:
            disk_props["ID_PART_TABLE_TYPE"] = "dos"
        disk = self.add_device("block", f"block/{kname}", scsi,
                               attrs={"dev": f"{maj}:{mi}", "size": _sectors(devname), "ro": "0",
                                      "removable": "1", "range": "16", "ext_range": "256"},
                               props=disk_props)
        part = None
        if fs_devname is not None:
            pmaj, pmi = _devnum(fs_devname)
            pname = os.path.basename(fs_devname)
            part_props = {"DEVNAME": fs_devname, "DEVTYPE": "partition", "MAJOR": pmaj, "MINOR": pmi,
                          "PARTN": "1", **common, **fs,
                          "ID_PART_TABLE_TYPE": "dos", "ID_PART_ENTRY_SCHEME": "dos",
                          "ID_PART_ENTRY_NUMBER": "1", "ID_PART_ENTRY_TYPE": "0x7",
                          "ID_PART_ENTRY_DISK": f"{maj}:{mi}", **(extra_props or {})}
            part = self.add_device("block", pname, disk,
                                   attrs={"dev": f"{pmaj}:{pmi}", "size": _sectors(fs_devname),
                                          "partition": "1", "start": "2048", "ro": "0"},
                                   props=part_props)
        cam = Camera(serial=serial, devname=devname, fs_devname=fs_devname or devname,
                     usb_syspath=usb, interface_syspath=intf, scsi_syspath=scsi,
                     disk_syspath=disk, part_syspath=part,
                     fs_props={k: str(v) for k, v in (part_props if part else disk_props).items()})
        return cam

    def _node_in_use(self, devname: str) -> bool:
        # umockdev records DEVNAME under <root>/dev/.node/ and aborts (assertion) on duplicates
        rel = devname[len("/dev/"):] if devname.startswith("/dev/") else devname
        return os.path.lexists(os.path.join(self.root, "dev", ".node", rel.replace("/", "_")))

    def trigger(self, cam: Camera, action: str = "add") -> None:
        """Re-send ``action`` uevents for the camera chain, parents first (like ``udevadm trigger``)."""
        for sp in cam.syspaths:
            self.uevent(sp, action)

    def unplug(self, cam: Camera, *, remove: bool = True) -> None:
        """'remove' uevents, children first; then drop the sysfs entries (``remove``)."""
        for sp in reversed(cam.syspaths):
            self.uevent(sp, "remove")
        if remove:
            # children first: umockdev's remove_device leaves a removed child's
            # /sys/class and /sys/block links dangling if only the parent is removed
            for sp in reversed(cam.syspaths):
                self.remove_device(sp)
