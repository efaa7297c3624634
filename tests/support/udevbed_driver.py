#!/usr/bin/python3
"""umockdev testbed driver: run as ``umockdev-wrapper /usr/bin/python3 udevbed_driver.py``.

Runs under the SYSTEM python because it needs ``gi`` + UMockdev-1.0 typelib
(Debian: python3-gi, gir1.2-umockdev-1.0), which the project venv cannot import.
It MUST itself run with libumockdev-preload (umockdev-wrapper): otherwise
``add_device(parent=...)`` fails ("parent device ... does not exist") and
``uevent()`` fails ("uevent_sender_send: No such device"), because the
testbed library checks/opens the /sys paths through the preload redirection.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout
(``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``). First line written
on startup is ``{"ok": true, "ready": true, "root": <testbed dir>}``. Commands:

  {"cmd": "add", "subsystem": s, "name": n, "parent": syspath|null,
   "attrs": {k: v}, "props": {k: v}}                       -> {"syspath": ...}
      (umockdev's add_device emits an 'add' uevent by itself)
  {"cmd": "uevent", "syspath": p, "action": "add"|"remove"|"change"}
  {"cmd": "remove", "syspath": p}                          (no uevent; sends none)
  {"cmd": "set_property", "syspath": p, "name": k, "value": v}
  {"cmd": "set_attribute", "syspath": p, "name": k, "value": v}
  {"cmd": "ping"}
  {"cmd": "quit"}

Stdlib + gi only. umockdev prints CRITICALs instead of raising; a None/False
result is turned into an error reply.
"""

import json
import os
import sys

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402


def _flat(d):
    out = []
    for k, v in (d or {}).items():
        out += [str(k), str(v)]
    return out


class Driver:
    def __init__(self):
        self.tb = UMockdev.Testbed.new()
        self.root = self.tb.get_root_dir()
        self.blocklinks = {}  # syspath -> root/sys/dev/block/M:m

    def _sysdir(self, syspath):
        return os.path.join(self.root, syspath.lstrip("/"))

    def add(self, subsystem, name, parent=None, attrs=None, props=None):
        syspath = self.tb.add_device(subsystem, name, parent, _flat(attrs), _flat(props))
        if not syspath:
            raise RuntimeError(f"add_device({subsystem!r}, {name!r}, parent={parent!r}) failed (see driver stderr)")
        dev = (attrs or {}).get("dev")
        if subsystem == "block" and dev:
            # umockdev 0.17 links every device under /sys/dev/char; block devices
            # belong in /sys/dev/block (pyudev Devices.from_device_file / from_device_number).
            d = os.path.join(self.root, "sys", "dev", "block")
            os.makedirs(d, exist_ok=True)
            link = os.path.join(d, dev)
            target = os.path.relpath(self._sysdir(syspath), d)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(target, link)
            self.blocklinks[syspath] = link
            charlink = os.path.join(self.root, "sys", "dev", "char", dev)
            if os.path.islink(charlink) and os.path.realpath(charlink) == os.path.realpath(self._sysdir(syspath)):
                os.unlink(charlink)
        return {"syspath": syspath}

    def uevent(self, syspath, action):
        if not os.path.isdir(self._sysdir(syspath)):
            raise RuntimeError(f"no such device {syspath}")
        self.tb.uevent(syspath, action)
        return {}

    def remove(self, syspath):
        link = self.blocklinks.pop(syspath, None)
        if link and os.path.lexists(link):
            os.unlink(link)
        # umockdev's remove_device recursively removes children; drop their links too
        for sp in [s for s in self.blocklinks if s.startswith(syspath.rstrip("/") + "/")]:
            lk = self.blocklinks.pop(sp)
            if os.path.lexists(lk):
                os.unlink(lk)
        self.tb.remove_device(syspath)
        self._prune_dangling()
        return {}

    def _prune_dangling(self):
        # umockdev 0.17 leaves /sys/block/<name> (and possibly bus/class) links behind
        sysroot = os.path.join(self.root, "sys")
        dirs = [os.path.join(sysroot, "block")]
        for top in ("class", "bus", "dev"):
            base = os.path.join(sysroot, top)
            for sub in (os.listdir(base) if os.path.isdir(base) else []):
                d = os.path.join(base, sub)
                dirs += [d, os.path.join(d, "devices")]
        for d in dirs:
            if not os.path.isdir(d) or os.path.islink(d):
                continue
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if os.path.islink(p) and not os.path.exists(p):
                    os.unlink(p)

    def set_property(self, syspath, name, value):
        self.tb.set_property(syspath, name, str(value))
        return {}

    def set_attribute(self, syspath, name, value):
        self.tb.set_attribute(syspath, name, str(value))
        return {}


def main():
    out = sys.stdout
    drv = Driver()

    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ok": True, "ready": True, "root": drv.root, "pid": os.getpid()})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req.pop("cmd")
            if cmd == "quit":
                reply({"ok": True})
                break
            if cmd == "ping":
                reply({"ok": True})
                continue
            fn = {
                "add": drv.add,
                "uevent": drv.uevent,
                "remove": drv.remove,
                "set_property": drv.set_property,
                "set_attribute": drv.set_attribute,
            }[cmd]
            res = fn(**req)
            reply({"ok": True, **res})
        except Exception as e:  # noqa: BLE001 - any failure is reported to the client, the driver keeps serving
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
    # Testbed's finalizer removes the root dir; be explicit for determinism.
    del drv


if __name__ == "__main__":
    main()
