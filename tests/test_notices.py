"""The grouped notice line: what a cell boundary says when several things end at once."""
from __future__ import annotations

from ttasks_ipy.views.notices import Notice, group_line


def _n(label: str, outcome: str = "finished", delivered: tuple[str, ...] = (), **kw) -> Notice:
    return Notice(f"[bg] full line of {label}", outcome, label, delivered, log_key=label, **kw)


def test_one_notice_is_its_own_full_line():
    assert group_line([_n("a", delivered=("x",))]) == "[bg] full line of a"
    assert group_line([_n("q", quiet=True), _n("b", "failed", reason="boom")]) == "[bg] full line of b"


def test_nothing_to_say():
    assert group_line([]) is None
    assert group_line([_n("q", quiet=True), _n("s", "ready", quiet=True)]) is None


def test_many_are_grouped_by_outcome_in_the_order_given():
    many = [_n(f"#{i}", delivered=(f"w{i}",)) for i in range(30)]
    failed = [_n("a", "failed", reason="x"), _n("b", "failed", reason="y")]
    assert group_line([*many[:10], failed[0], *many[10:], failed[1]]) == (
        "[bg] ✓ 30 finished → w0 … w29 · ✗ 2 failed: a, b (%bg --log a)"
    )


def test_a_single_one_of_its_kind_is_named_with_its_reason():
    line = group_line([_n("fit", delivered=("model",)), _n("load", "failed", reason="exit status 3"),
                       _n("slow", "cancelled", reason="timed out after 5s"), _n("late", "never ran")])
    assert line == ("[bg] ✓ fit finished → model · ✗ load failed: exit status 3 (%bg --log load)"
                    " · ⊘ slow cancelled: timed out after 5s · ⊘ late never ran")


def test_tasks_that_deliver_nothing_are_named_and_quiet_successes_are_not():
    line = group_line([_n("a"), _n("b", delivered=("y",)), _n("q", quiet=True, delivered=("z",)),
                       _n("qf", "failed", quiet=True, reason="boom")])
    assert line == "[bg] ✓ 2 finished: a → y · ✗ qf failed: boom (%bg --log qf)"


def test_names_not_delivered_are_said_with_where_the_value_is():
    where = "the value: ttasks_ipy.task('a').result['z']"
    line = group_line([_n("a", kept=("z",), kept_where=where), _n("b", delivered=("y",))])
    assert line == f"[bg] ✓ 2 finished: a → y · not delivered: z of a (reassigned since dispatch; {where})"
