"""collect.list_shared: one listing per camera-day directory gives each clip exactly the keys a per-clip
listing (``list_keys(key + ".")``) would."""

from __future__ import annotations

from dockd.agency.disclosure import collect

D = "ev/st1/CAM1/2025/06/01/"
A, B, C, E = (D + c * 64 + ".mp4" for c in "abce")
STORED = [A, A + ".manifest.json", A + ".0123456789abcdef.manifest.json", A + ".s.srt",
          B, B + ".manifest.json", C, C + ".manifest.json", E, E + ".manifest.json",
          D + "a" * 64 + ".mov", D + "a" * 64 + ".mov.manifest.json",  # same digest, other extension
          "ev/st1/CAM1/2025/06/02/" + "d" * 64 + ".mp4.manifest.json"]


class Listing:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def list_keys(self, prefix: str):
        self.calls.append(prefix)
        return iter(k for k in sorted(STORED) if k.startswith(prefix))


def test_shared_listing_equals_per_clip_listings():
    b = Listing()
    got = collect.list_shared(b, [A, B, C, E])  # type: ignore[arg-type]
    assert b.calls == [D]
    for k in (A, B, C, E):
        assert sorted(got[k]) == sorted(x for x in STORED if x.startswith(k + "."))
    assert got[A] == [A + ".0123456789abcdef.manifest.json", A + ".manifest.json", A + ".s.srt"]


def test_few_clips_in_a_directory_are_left_to_resolve():
    b = Listing()
    assert collect.list_shared(b, [A, B, C]) == {} and b.calls == []  # type: ignore[arg-type]
