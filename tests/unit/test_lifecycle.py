"""The pure clip lifecycle: the transition table, the wipe gate's lifecycle half, camera-state policy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockd.core.errors import EXIT_FAILED, IllegalTransition
from dockd.core.lifecycle import (
    HELD_LOCALLY,
    NEEDS_ATTENTION,
    PENDING,
    TRANSITIONS,
    CameraState,
    ClipEvent,
    ClipState,
    camera_state,
    may_wipe,
    next_state,
)

S, E = ClipState, ClipEvent

# The whole legal table, spelled out independently of TRANSITIONS so an edit
# to the table that is not also made here fails a test.
LEGAL = [
    (S.DISCOVERED, E.COPY_STARTED, S.COPYING),
    (S.DISCOVERED, E.QUARANTINE, S.QUARANTINED),
    (S.COPYING, E.COPY_ABORTED, S.DISCOVERED),
    (S.COPYING, E.STAGED, S.STAGED),
    (S.COPYING, E.QUARANTINE, S.QUARANTINED),
    (S.STAGED, E.UPLOAD_STARTED, S.UPLOADING),
    (S.STAGED, E.QUARANTINE, S.QUARANTINED),
    (S.STAGED, E.UPLOAD_FAILED, S.FAILED),
    (S.UPLOADING, E.UPLOAD_RETRY, S.STAGED),
    (S.UPLOADING, E.UPLOADED, S.UPLOADED),
    (S.UPLOADING, E.UPLOAD_FAILED, S.FAILED),
    (S.UPLOADING, E.QUARANTINE, S.QUARANTINED),
    (S.FAILED, E.REPLAY, S.STAGED),
    (S.UPLOADED, E.WIPE_STARTED, S.WIPING),
    (S.WIPING, E.WIPED, S.WIPED),
    (S.WIPING, E.WIPE_ABORTED, S.UPLOADED),
    (S.WIPED, E.WIPE_REDO, S.WIPING),
]
LEGAL_KEYS = {(s, e) for s, e, _ in LEGAL}
ILLEGAL = [(s, e) for s in ClipState for e in ClipEvent if (s, e) not in LEGAL_KEYS]


def test_state_and_event_spellings_are_the_cli_contract():
    assert [str(s) for s in ClipState] == ["discovered", "copying", "staged", "uploading", "uploaded", "wiping",
                                           "wiped", "failed", "quarantined"]
    assert {str(e) for e in ClipEvent} == {"copy_started", "copy_aborted", "staged", "upload_started",
                                           "upload_retry", "uploaded", "upload_failed", "replay", "quarantine",
                                           "wipe_started", "wiped", "wipe_aborted", "wipe_redo"}


def test_table_is_exactly_the_documented_one():
    assert {(s, e): n for s, e, n in LEGAL} == TRANSITIONS


@pytest.mark.parametrize("state,event,expected", LEGAL, ids=[f"{s}-{e}" for s, e, _ in LEGAL])
def test_every_legal_transition(state, event, expected):
    assert next_state(1, state, event) is expected
    # plain strings (as read back from the database) work the same
    assert next_state(1, str(state), str(event)) is expected


@pytest.mark.parametrize("state,event", ILLEGAL, ids=[f"{s}-{e}" for s, e in ILLEGAL])
def test_every_illegal_transition_raises(state, event):
    with pytest.raises(IllegalTransition) as ei:
        next_state(42, state, event)
    msg = str(ei.value)
    assert msg.startswith("clip 42: illegal transition") and str(state) in msg and str(event) in msg
    assert "\n" not in msg
    assert ei.value.exit_code == EXIT_FAILED


@pytest.mark.parametrize("state,event", [("bogus", "staged"), ("staged", "bogus"), ("", ""), (None, "wiped")])
def test_unknown_state_or_event_is_an_illegal_transition_not_a_value_error(state, event):
    with pytest.raises(IllegalTransition):
        next_state(7, state, event)


def test_quarantined_is_terminal_and_wiped_only_reopens_for_a_redo():
    for e in ClipEvent:
        with pytest.raises(IllegalTransition):
            next_state(1, S.QUARANTINED, e)
        if e is not E.WIPE_REDO:  # a dock found the file still on the camera: wiping again
            with pytest.raises(IllegalTransition):
                next_state(1, S.WIPED, e)


def test_state_groups():
    assert PENDING == {S.DISCOVERED, S.COPYING, S.STAGED, S.UPLOADING}
    assert NEEDS_ATTENTION == {S.FAILED, S.QUARANTINED}
    assert HELD_LOCALLY == {S.STAGED, S.UPLOADING, S.FAILED}
    assert not (PENDING & NEEDS_ATTENTION)


@given(st.lists(st.sampled_from(list(ClipEvent)), max_size=60))
@settings(max_examples=400, deadline=None)
def test_property_wiped_only_after_uploaded_and_uploaded_only_after_uploading(events):
    state = S.DISCOVERED
    history = [state]
    for ev in events:
        try:
            new = next_state(1, state, ev)
        except IllegalTransition:
            assert (state, ev) not in TRANSITIONS
            continue
        if new is S.WIPED:
            assert state is S.WIPING and ev is E.WIPED
        if new is S.WIPING:
            assert (state, ev) in ((S.UPLOADED, E.WIPE_STARTED), (S.WIPED, E.WIPE_REDO))
        if new is S.UPLOADED:
            assert (state, ev) in ((S.UPLOADING, E.UPLOADED), (S.WIPING, E.WIPE_ABORTED))
        history.append(new)
        state = new
    # Over the whole walk: every `wiped` is immediately preceded by the intent (`wiping`), the first
    # `wiping` by `uploaded`, the first `uploaded` by `uploading`, and `wiped` is left only for `wiping`.
    for prev, cur in zip(history, history[1:], strict=False):
        if cur is S.WIPED:
            assert prev is S.WIPING
        if prev is S.WIPED:
            assert cur is S.WIPING
    if S.WIPING in history:
        assert history[history.index(S.WIPING) - 1] is S.UPLOADED
    if S.UPLOADED in history:
        assert history[history.index(S.UPLOADED) - 1] is S.UPLOADING


@given(st.lists(st.sampled_from(list(ClipEvent)), max_size=40))
@settings(max_examples=200, deadline=None)
def test_property_no_path_to_wiped_skips_the_upload_proof(events):
    """Any walk that reaches wiped has passed staged -> uploading -> uploaded in that order."""
    state, seen = S.DISCOVERED, [S.DISCOVERED]
    for ev in events:
        try:
            state = next_state(1, state, ev)
        except IllegalTransition:
            continue
        seen.append(state)
    if state is S.WIPED:
        assert seen[-2] is S.WIPING
        i_up = seen.index(S.UPLOADED)
        assert seen[i_up - 1] is S.UPLOADING and seen.index(S.WIPING) > i_up
        assert S.STAGED in seen[:i_up - 1] and S.COPYING in seen[:i_up - 1]


@pytest.mark.parametrize("state", list(ClipState))
@pytest.mark.parametrize("storage", [True, False])
@pytest.mark.parametrize("mode", ["after-upload", "never"])
def test_may_wipe(state, storage, mode):
    expected = state in (S.UPLOADED, S.WIPING) and storage and mode == "after-upload"
    assert may_wipe(state, storage_configured=storage, wipe_mode=mode) is expected
    assert may_wipe(str(state), storage_configured=storage, wipe_mode=mode) is expected


# ------------------------------------------------------------ camera state policy

C = CameraState
WIPE = dict(storage_configured=True, wipe_mode="after-upload")
HOLD_NEVER = dict(storage_configured=True, wipe_mode="never")
HOLD_NOSTORE = dict(storage_configured=False, wipe_mode="after-upload")

POLICY = [
    # (counts, offloading_done, settings, expected)
    ({}, False, WIPE, C.OFFLOADING),
    ({"failed": 3}, False, WIPE, C.OFFLOADING),  # still copying wins
    ({}, True, WIPE, C.READY),
    ({"staged": 1}, True, WIPE, C.UPLOADING),
    ({"uploading": 1, "uploaded": 4}, True, WIPE, C.UPLOADING),
    ({"discovered": 1}, True, WIPE, C.UPLOADING),
    ({"copying": 1}, True, WIPE, C.UPLOADING),
    ({"uploaded": 2}, True, WIPE, C.WIPING),
    ({"wiping": 1}, True, WIPE, C.WIPING),  # an intent not yet confirmed: never ready
    ({"wiping": 1}, True, HOLD_NEVER, C.WIPING),
    ({"wiping": 1}, True, HOLD_NOSTORE, C.WIPING),
    ({"wiping": 1, "failed": 1}, True, WIPE, C.ATTENTION),
    ({"uploaded": 0, "staged": 0}, True, WIPE, C.READY),
    ({"failed": 1, "uploaded": 5}, True, WIPE, C.ATTENTION),
    ({"quarantined": 1}, True, WIPE, C.ATTENTION),
    ({"quarantined": 1}, True, HOLD_NEVER, C.ATTENTION),
    ({"staged": 2}, True, HOLD_NEVER, C.HOLDING),
    ({"uploaded": 2}, True, HOLD_NEVER, C.HOLDING),
    ({}, True, HOLD_NEVER, C.HOLDING),
    ({"discovered": 1, "staged": 1}, True, HOLD_NEVER, C.OFFLOADING),
    ({"copying": 1}, True, HOLD_NOSTORE, C.OFFLOADING),
    ({"staged": 9}, True, HOLD_NOSTORE, C.HOLDING),
    ({"failed": 1}, True, HOLD_NOSTORE, C.ATTENTION),
]


@pytest.mark.parametrize("counts,done,kw,expected", POLICY)
def test_camera_state_policy(counts, done, kw, expected):
    assert camera_state(counts, offloading_done=done, **kw) is expected


@given(st.dictionaries(st.sampled_from([str(s) for s in ClipState]), st.integers(0, 5)),
       st.booleans(), st.booleans(), st.sampled_from(["after-upload", "never"]))
@settings(max_examples=300, deadline=None)
def test_property_camera_is_never_ready_while_it_holds_unfinished_clips(counts, done, storage, mode):
    cs = camera_state(counts, offloading_done=done, storage_configured=storage, wipe_mode=mode)
    unfinished = any(counts.get(str(s), 0) for s in ClipState if s is not S.WIPED)
    if unfinished:
        assert cs is not C.READY
    if cs is C.WIPING:
        assert counts.get("wiping", 0) or (counts.get("uploaded", 0) and storage and mode == "after-upload")
    if any(counts.get(str(s), 0) for s in NEEDS_ATTENTION) and done:
        assert cs is C.ATTENTION
