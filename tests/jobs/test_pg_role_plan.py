"""Which roles `backup-set` runs at once (jobs/pgsets.py `role_dependencies`, `ready_roles`; pure: no PostgreSQL).

The scheduler is replayed against every order in which running roles may finish: participant never starts
before apps is done, no more than `parallel` roles run, every role runs exactly once, and nothing waits when a
slot and a ready role exist."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobs.pgsets import ready_roles, role_dependencies
from rules.manifest import APPS, CANTON_BFT, PARTICIPANT

ALL_ROLES = [CANTON_BFT, APPS, PARTICIPANT, "sequencer", "mediator", "scan-extra"]


def replay(roles: list[str], parallel: int, picks: list[int]) -> list[tuple[str, str]]:
    """Run the scheduler loop as backup_set does; `picks` chooses which running role finishes next. Returns the
    events ("start"|"done", role) in order and checks the invariants at every step."""
    deps = role_dependencies(roles)
    done: set[str] = set()
    started: set[str] = set()
    events: list[tuple[str, str]] = []
    pick = iter(picks)
    while len(done) < len(roles):
        for role in ready_roles(deps, done, started, parallel):
            assert role not in started
            assert all(d in done for d in deps[role]), f"{role} started before {deps[role]}"
            started.add(role)
            events.append(("start", role))
        running = sorted(started - done)
        assert running, "nothing runs but roles remain"
        assert len(running) <= max(1, parallel)
        # Work-conserving: a free slot is never left idle while a role could start.
        if len(running) < max(1, parallel):
            assert not [r for r in roles if r not in started and all(d in done for d in deps[r])]
        finished = running[next(pick, 0) % len(running)]
        done.add(finished)
        events.append(("done", finished))
    return events


@given(
    roles=st.lists(st.sampled_from(ALL_ROLES), min_size=1, unique=True),
    parallel=st.integers(min_value=0, max_value=5),
    picks=st.lists(st.integers(min_value=0, max_value=10), max_size=20),
)
def test_any_completion_order_keeps_apps_before_participant(roles, parallel, picks):
    events = replay(roles, parallel, picks)
    assert sorted(r for kind, r in events if kind == "start") == sorted(roles)
    if APPS in roles and PARTICIPANT in roles:
        assert events.index(("done", APPS)) < events.index(("start", PARTICIPANT))
    if CANTON_BFT in roles and APPS in roles:
        assert events.index(("done", CANTON_BFT)) < events.index(("start", APPS))


def test_only_participant_waits_and_only_for_apps():
    assert role_dependencies([APPS, PARTICIPANT, "sequencer", "mediator"]) == {
        APPS: (), PARTICIPANT: (APPS,), "sequencer": (), "mediator": ()}
    # Without apps in the set there is nothing to wait for (a set of a node's sequencer alone, say).
    assert role_dependencies([PARTICIPANT, "sequencer"]) == {PARTICIPANT: (), "sequencer": ()}


def test_independent_roles_start_beside_apps_and_apps_goes_first():
    deps = role_dependencies([APPS, PARTICIPANT, "sequencer", "mediator"])
    assert ready_roles(deps, set(), set(), parallel=2) == [APPS, "sequencer"]
    assert ready_roles(deps, set(), set(), parallel=4) == [APPS, "sequencer", "mediator"]
    assert ready_roles(deps, set(), set(), parallel=1) == [APPS]
    # apps done, sequencer still running: the freed slot goes to participant, not to mediator.
    assert ready_roles(deps, {APPS}, {APPS, "sequencer"}, parallel=2) == [PARTICIPANT]
    assert ready_roles(deps, set(), {APPS, "sequencer"}, parallel=2) == []


def test_two_roles_run_one_after_the_other():
    events = replay([APPS, PARTICIPANT], parallel=4, picks=[])
    assert events == [("start", APPS), ("done", APPS), ("start", PARTICIPANT), ("done", PARTICIPANT)]


def test_dabft_state_goes_first_then_apps_before_participant():
    """A DABFT node's canton-bft state is taken first, as Splice's backup script does: apps waits for it."""
    roles = [CANTON_BFT, APPS, PARTICIPANT, "sequencer", "mediator"]
    deps = role_dependencies(roles)
    assert deps == {CANTON_BFT: (), APPS: (CANTON_BFT,), PARTICIPANT: (APPS,), "sequencer": (), "mediator": ()}
    assert ready_roles(deps, set(), set(), parallel=2) == [CANTON_BFT, "sequencer"]
    assert ready_roles(deps, set(), set(), parallel=1) == [CANTON_BFT]
    # canton-bft done, sequencer still running: the freed slot goes to apps.
    assert ready_roles(deps, {CANTON_BFT}, {CANTON_BFT, "sequencer"}, parallel=2) == [APPS]
    events = replay([CANTON_BFT, APPS, PARTICIPANT], parallel=4, picks=[])
    assert [r for kind, r in events if kind == "start"] == [CANTON_BFT, APPS, PARTICIPANT]
