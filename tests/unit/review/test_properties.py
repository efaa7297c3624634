"""Property tests of the matching rule: coverage only grows with clips, so adding a clip never makes an
outcome worse and removing one never makes it better."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dockd.agency.review import match

NS = match.NS
# better first; justified/pending/excluded do not depend on the clips but are ranked for completeness
RANK = {"excluded": 0, "covered": 1, "justified": 2, "pending": 3, "partial": 4, "missing": 5}
T0 = 1_772_000_000 * NS

clip_st = st.builds(lambda cam, s, d, off: match.Clip(cam, T0 + s * NS, d * NS, off * NS, f"k{s}-{d}"),
                    st.sampled_from(["A", "B"]), st.integers(-3600, 7200), st.integers(0, 3600),
                    st.integers(-600, 600))
inc_st = st.builds(lambda d, a, c, o, ct: match.Incident("I", o, ct, T0 + d * NS,
                                                         None if a is None else T0 + (d + min(a, c)) * NS,
                                                         T0 + (d + c) * NS),
                   st.integers(0, 3600), st.none() | st.integers(0, 1800), st.integers(0, 3600),
                   st.sampled_from(["O1", "O2"]), st.sampled_from(["ALARM", "ADMIN"]))
ROSTER = [match.Assignment("A", "O1", T0 - 3600 * NS, T0 + 1800 * NS),
          match.Assignment("B", "O1", T0 + 1800 * NS, None),
          match.Assignment("B", "O2", T0 - 3600 * NS, None)]
POLICY = match.Policy(excluded_call_types=frozenset({"ADMIN"}))


def run(inc, clips, docks, justified=False, now=T0 + 30 * 86400 * NS):
    per: dict[str, list[match.Clip]] = {}
    for c in clips:
        per.setdefault(c.camera, []).append(c)
    js = {("I", inc.officer): match.Justification(1, "I", inc.officer, "battery", "", "k", "t")} if justified else {}
    (row,) = match.review([inc], ROSTER, per, docks, js, POLICY, now)
    return row


dock_st = st.lists(st.integers(-86400, 86400 * 5), max_size=3).map(
    lambda ts: {"B": [match.Dock("B", T0 + t * NS) for t in sorted(ts)]})


@settings(max_examples=150, deadline=None)
@given(inc_st, st.lists(clip_st, max_size=6), clip_st, dock_st, st.booleans(), st.integers(0, 10 * 86400))
def test_adding_a_clip_never_worsens_removing_never_improves(inc, clips, extra, docks, justified, now_s):
    now = T0 + now_s * NS
    before = run(inc, clips, docks, justified, now)
    after = run(inc, [*clips, extra], docks, justified, now)
    assert after.coverage_bp >= before.coverage_bp
    assert RANK[after.outcome] <= RANK[before.outcome]
    if before.outcome == "covered":
        assert after.outcome == "covered"
    # and the converse, read the other way: removing `extra` from `after` never improves it
    assert not (RANK[before.outcome] < RANK[after.outcome])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), max_size=8))
def test_union_is_sorted_disjoint_and_preserves_length_bound(ivs):
    ivs = [(min(a, b), max(a, b)) for a, b in ivs]
    u = match.union(ivs)
    assert all(u[i][1] < u[i + 1][0] for i in range(len(u) - 1))
    covered = {x for s, e in ivs for x in range(s, e)}
    assert sum(e - s for s, e in u) == len(covered)


def test_coverage_is_capped_and_weighted():
    w = (0, 100)
    assert match.weighted_coverage(w, None, [(0, 100)], 2.0) == 10000
    assert match.weighted_coverage(w, (50, 100), [(50, 100)], 3.0) == 7500  # 150 of 200
    assert match.weighted_coverage((5, 5), None, [], 2.0) == 0
