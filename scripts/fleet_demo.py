#!/usr/bin/env python3
"""A small demo fleet on a file:// share, for the README's `fleet stations` output and report screenshot.

    .venv/bin/python scripts/fleet_demo.py DIR

Six enrolled stations report every 30 minutes for a day (one stopped 90 minutes ago, one with an Object
Lock alarm, one with a 3-day backlog, one low on space), `dockd fleet` reading after each round (so the
report has a backlog over time); one more station is enrolled and silent, one signs with a key the trust
log does not know. Then, in DIR: `dockd --config agency.toml fleet stations --trust agency/trust --cache
cache.json` and `... fleet report --html fleet.html` show it.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockd import config  # noqa: E402
from dockd.agency.fleet.reader import Reader  # noqa: E402
from dockd.storage.localfs import FileBackend  # noqa: E402
from tests.support import fleet as sf  # noqa: E402
from tests.support.uploads import station_config  # noqa: E402

SPEC: dict[str, dict] = {
    "precinct-a1": {}, "precinct-b2": {},
    "precinct-c11": {"alarms": [{"kind": "object-lock", "message": "bucket does not enforce Object Lock"}]},
    "precinct-d4": {"stop": 5400}, "precinct-e13": {"pending": 37, "oldest": 3 * 86400},
    "precinct-hq": {"free": 3 << 30},
}


def main(root: Path) -> None:
    root.mkdir(parents=True)
    share = root / "share"
    share.mkdir()
    a = sf.agency(root / "agency")
    b = FileBackend(config.StorageConfig(url=f"file://{share}"))
    now = time.time()
    keys = {name: a.station_key(name) for name in SPEC}
    a.station_key("precinct-f6")  # enrolled, never reported
    rnd = random.Random(7)
    for j in range(48):
        at0 = now - (47 - j) * 1800
        for n, (name, s) in enumerate(SPEC.items()):
            at = at0 - s.get("stop", 0)
            cams = [sf.camera(f"BWC{n * 8 + c:04d}", at - rnd.randint(0, 5 * 86400) if c % 3 else at,
                              docked=c % 3 == 0, bay=str(c + 1),
                              anomalies=["clock offset 95 s"] if (n * 8 + c) % 17 == 0 else [])
                    for c in range(8)]
            pending = s.get("pending", 0) + 6 + 5 * ((j // 4 + n) % 7)
            sf.put(b, "", keys[name], sf.body(name, at, j + 1, pending=pending, oldest_s=s.get("oldest", 1200),
                                              free_bytes=s.get("free", 400 << 30), alarms=s.get("alarms"),
                                              cameras=cams))
        Reader(b, "", a.state(), cache=root / "cache.json", now=at0 + 5).read()
    sf.put(b, "", a.station_key("precinct-x", enrol=False), sf.body("precinct-x", now - 60, 1))
    station_config(root / "agency.toml", data_dir=root / "d", storage={"url": f"file://{share}"},
                   trust={"root_pubkey": str(a.root_pem)})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
