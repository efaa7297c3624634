"""The local index cache (SQLite, no storage): clips come back placed by the clock offset and sorted, docks
per camera, and a roster naming a camera by its device id is translated to the serial."""

from __future__ import annotations

from dockd.agency.review import index, match, run
from tests.support.review import indexgen


def test_cache_places_sorts_and_maps_device_ids(tmp_path):
    gen = indexgen()
    cache = index.Cache(tmp_path / "c")
    clips = [gen.clip_line("s", "CAM1", "2026-03-01T10:00:00Z", 60.0, 2, offset_s=3600.0, device_id="DEV-9"),
             gen.clip_line("s", "CAM1", "2026-03-01T08:30:00Z", 30.0, 1, device_id="DEV-9"),
             gen.clip_line("s", "CAM1", None, None, 3)]  # unplaced: never read
    docks = [gen.dock_line("s", "CAM1", "2026-03-01T18:00:00Z", [{"kind": "seq_gap"}])]
    head = {"seq": 1, "date": "2026-03-01", "station": "s", "x": 1}
    cache.add("s", head, clips, docks)
    cache.commit()
    got = cache.clips_between(match.time_ns("2026-03-01T00:00:00Z") or 0, match.time_ns("2026-03-02T00:00:00Z") or 0)
    assert [(run.fmt(s), run.fmt(e)) for s, e, _ in got["CAM1"].placed] == [
        ("2026-03-01T08:30:00Z", "2026-03-01T08:30:30Z"), ("2026-03-01T09:00:00Z", "2026-03-01T09:01:00Z")]
    assert cache.docks_by_camera()["CAM1"][0].anomalies == ("seq_gap",)
    notes: list[str] = []
    roster = [match.Assignment("DEV-9", "O1", 0, None), match.Assignment("CAM7", "O2", 0, None)]
    assert [a.camera for a in run._cameras_by_device(roster, cache, notes)] == ["CAM1", "CAM7"]
    assert cache.tips() == {"s": (1, index.fmt.head_digest(head))}
