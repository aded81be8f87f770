"""What one report does (updater.fleet.reports): pure, then checked against the store's own counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from updater.fleet import reports as r
from updater.fleet.hoststate import UNEXPLAINED_ROLLBACK, HostState, ReportRejected
from updater.fleet.records import HostRow
from updater.fleet.settings import HaltRule, parse_settings
from updater.fleet.store import Store
from updater.wire import Report, ReportEvent, RollbackCause

RULE = HaltRule(max_failure_share=0.5, min_updates=2, max_unexplained_share=0.5)
NONE = r.RolloutCounts(started=0, failed=0, unexplained=0, hosts_in_group=0, hosts_on_release=0)


def _report(event: ReportEvent, seq: int = 5, cause: RollbackCause | None = None) -> Report:
    return Report("n", "g", seq, event, "1.1.0", "1.0.0", cause=cause)


def _view(state: HostState, counts: r.RolloutCounts = NONE, open_updates: int = 1) -> r.ReportView:
    return r.ReportView(HostRow("n", "g", "1.0.0", state, "1.1.0", 4), counts, open_updates)


def test_a_step_moves_the_host_and_judges_nothing() -> None:
    effects = r.judge_report(_report(ReportEvent.STAGED), "g", RULE, _view(HostState.DOWNLOADING))
    assert effects == r.ReportEffects(HostRow("n", "g", "1.0.0", HostState.STAGED, "1.1.0", 5), None, None)


def test_a_replayed_or_out_of_order_report_is_refused() -> None:
    with pytest.raises(ReportRejected, match="not after the last one"):
        r.judge_report(_report(ReportEvent.STAGED, seq=4), "g", RULE, _view(HostState.DOWNLOADING))
    with pytest.raises(ReportRejected, match="cannot follow"):
        r.judge_report(_report(ReportEvent.BLESSED), "g", RULE, _view(HostState.DOWNLOADING))


def test_an_unknown_host_starts_idle_on_its_from_version() -> None:
    view = r.ReportView(None, NONE, 0)
    effects = r.judge_report(_report(ReportEvent.DOWNLOADING, seq=0), "g", RULE, view)
    assert effects.host == HostRow("n", "g", "1.0.0", HostState.DOWNLOADING, "1.1.0", 0)


def test_blessed_moves_the_version_and_finishes_the_rollout_when_all_are_on_it() -> None:
    counts = r.RolloutCounts(started=1, failed=0, unexplained=0, hosts_in_group=1, hosts_on_release=0)
    effects = r.judge_report(_report(ReportEvent.BLESSED), "g", RULE, _view(HostState.REBOOTING, counts))
    assert effects.host == HostRow("n", "g", "1.1.0", HostState.BLESSED, None, 5)
    assert effects.outcome == "blessed" and effects.rollout == r.FinishRollout()
    two = r.RolloutCounts(started=1, failed=0, unexplained=0, hosts_in_group=2, hosts_on_release=0)
    assert r.judge_report(_report(ReportEvent.BLESSED), "g", RULE, _view(HostState.REBOOTING, two)).rollout is None


def test_failures_halt_with_a_reason_that_counts_them() -> None:
    counts = r.RolloutCounts(started=2, failed=1, unexplained=0, hosts_in_group=5, hosts_on_release=0)
    effects = r.judge_report(_report(ReportEvent.FAILED), "g", RULE, _view(HostState.DOWNLOADING, counts))
    assert effects.outcome == "failed"
    assert effects.rollout == r.Halt("2 of 2 updates failed or rolled back")


def test_unexplained_rollbacks_are_counted_and_named_apart() -> None:
    counts = r.RolloutCounts(started=2, failed=0, unexplained=1, hosts_in_group=5, hosts_on_release=0)
    report = _report(ReportEvent.ROLLED_BACK, cause=RollbackCause.UNEXPLAINED)
    effects = r.judge_report(report, "g", RULE, _view(HostState.REBOOTING, counts))
    assert effects.outcome == UNEXPLAINED_ROLLBACK
    assert effects.rollout == r.Halt("0 of 2 updates failed or rolled back, 2 rolled back for no cause seen")
    explained = _report(ReportEvent.ROLLED_BACK, cause=RollbackCause.HEALTH_CHECK)
    assert r.judge_report(explained, "g", RULE, _view(HostState.REBOOTING, counts)).outcome == "rolled_back"


def test_a_finish_with_no_open_update_counts_no_failure() -> None:
    counts = r.RolloutCounts(started=2, failed=0, unexplained=0, hosts_in_group=5, hosts_on_release=0)
    effects = r.judge_report(_report(ReportEvent.FAILED), "g", RULE, _view(HostState.DOWNLOADING, counts, 0))
    assert effects.rollout is None


def test_a_host_new_to_the_group_is_counted_in_it() -> None:
    before = HostRow("n", "other", "1.1.0", HostState.REBOOTING, "1.1.0", 4)
    view = r.ReportView(before, r.RolloutCounts(1, 0, 0, 1, 1), 1)
    after = HostRow("n", "g", "1.1.0", HostState.BLESSED, None, 5)
    assert r.counts_after(view, after, "1.1.0", "blessed") == r.RolloutCounts(1, 0, 0, 2, 2)


# --- the delta is the store's own recount, whatever happened before ---

EVENTS = st.sampled_from(list(ReportEvent))
WALK = (ReportEvent.DOWNLOADING, ReportEvent.STAGED, ReportEvent.REBOOTING, None)  # None: an outcome
FINISH = (ReportEvent.BLESSED, ReportEvent.ROLLED_BACK, ReportEvent.FAILED)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["walk", "walk", "walk", "report", "offer", "observe"]),
        st.sampled_from("abc"),
        EVENTS,
        st.sampled_from(["1.1.0", "1.2.0"]),
        st.sampled_from([None, *RollbackCause]),
        st.sampled_from(["g", "h"]),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
# A host already on the release that fails it leaves it; an unexplained rollback, then
# a blessed update in a group the host was moved into.
@example(steps=[("observe", "a", ReportEvent.FAILED, "1.1.0", None, "g"), ("report", "a", ReportEvent.FAILED, "1.1.0", None, "g")])
@example(
    steps=[("offer", "a", ReportEvent.FAILED, "1.1.0", None, "g")]
    + [("walk", "a", ReportEvent.ROLLED_BACK, "1.1.0", RollbackCause.UNEXPLAINED, "g")] * 4
    + [("observe", "a", ReportEvent.FAILED, "1.0.0", None, "h"), ("offer", "a", ReportEvent.FAILED, "1.1.0", None, "h")]
    + [("walk", "a", ReportEvent.BLESSED, "1.1.0", None, "h")] * 4
)
def test_counts_after_a_report_are_what_the_store_counts(tmp_path: Path, steps: list[tuple[str, str, ReportEvent, str, RollbackCause | None, str]]) -> None:
    groups = parse_settings({"groups": {"g": {}, "h": {}}}, Path(".")).groups
    store = Store(f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    try:
        for table in ("hosts", "updates", "reports", "rollouts"):
            store._rows(f"DELETE FROM {table}")
        seqs: dict[str, int] = {}
        walks: dict[str, int] = {}  # how far each node's update walked: most reports then apply
        for now, (action, node, event, version, cause, group) in enumerate(steps):
            if action == "observe":
                store.observe(node, group, version, now)
            elif action == "offer":
                try:
                    store.start_update(groups[group], node, version, now, 86400)
                except ReportRejected:
                    pass
            else:
                if action == "walk":
                    walk = WALK[walks.get(node, 0) % len(WALK)]
                    walks[node] = walks.get(node, 0) + 1
                    event = walk or (event if event in FINISH else ReportEvent.BLESSED)
                seqs[node] = seqs.get(node, -1) + 1
                report = Report(node, group, seqs[node], event, version, "1.0.0", cause=cause)
                view = store._report_view(report, group)
                try:
                    effects = r.judge_report(report, group, groups[group].halt, view)
                except ReportRejected:
                    continue
                assert store.record_report(report, groups[group], now) is effects.host.state
                assert store.host(node) == effects.host
                if effects.outcome is not None:
                    recount = store._report_view(report, group).counts
                    assert r.counts_after(view, effects.host, version, effects.outcome) == recount
    finally:
        store.close()
