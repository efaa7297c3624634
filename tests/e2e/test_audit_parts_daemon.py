"""The daemon's part export at stop (issue #16): a station stopped on the day it worked leaves its rows in
storage as a signed part, not only after midnight; ``[audit] part_interval_s = 0`` turns that off."""

from __future__ import annotations

import json

from dockd.evidence import keys
from dockd.queue.store import Queue
from dockd.station.auditlog import check_segment
from tests.support.cli import run_dockd
from tests.support.uploads import station_config


def test_a_stopping_daemon_exports_its_rows_as_a_part(tmp_path, s3env, bucket):
    watch, data = tmp_path / "dock", tmp_path / "data"
    watch.mkdir()
    storage = {"url": f"s3://{bucket}/bwc", "endpoint_url": s3env.endpoint_url, "region": s3env.region}
    c = s3env.client()

    def parts() -> list[str]:
        return sorted(o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="bwc/st1/_audit/").get("Contents", []))

    for n, audit in enumerate(({}, {"part_interval_s": 0})):
        cfg = station_config(tmp_path / f"dockd{n}.toml", data_dir=data, sources={"watch_dirs": [str(watch)]},
                             storage=storage, metrics={"listen": ""}, audit=audit)
        r = run_dockd("run", "--drain", config=cfg, timeout=90)
        assert r.returncode == 0, r.stderr
        if n == 0:
            first = parts()
    assert parts() == first and len(first) == 2 and ".part-000000000001." in first[0], first  # none with 0
    body, head = (c.get_object(Bucket=bucket, Key=k)["Body"].read() for k in (first[1], first[0]))
    h = json.loads(head)
    assert h["part"] is True and h["first_seq"] == 1
    assert check_segment(body, h, keys.load_or_create(data)[0].public)[0]
    rows = [json.loads(x) for x in body.decode().splitlines()]
    assert rows[-1]["event"] == "daemon.stopped"  # everything up to the stop
    q = Queue(data / "queue.db")
    try:
        assert q.last_audit_part()["last_seq"] == h["last_seq"] < q.last_audit()[0]  # run 2's rows: no part
    finally:
        q.close()
