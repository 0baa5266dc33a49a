"""TurnControl: the client's cancel reaches whatever the turn hooked to it, once."""

from __future__ import annotations

from gateway.service import TurnControl


def test_hooks_run_once_when_cancelled() -> None:
    control, calls = TurnControl(), []
    control.on_cancel(lambda: calls.append("a"))
    control.on_cancel(lambda: calls.append("b"))
    control.cancel()
    control.cancel()
    assert calls == ["a", "b"] and control.cancelled.is_set()


def test_a_hook_added_after_the_cancel_runs_at_once() -> None:
    control, calls = TurnControl(), []
    control.cancel()
    control.on_cancel(lambda: calls.append("late"))
    assert calls == ["late"]


def test_a_discarded_hook_does_not_run() -> None:
    control, calls = TurnControl(), []

    def hook() -> None:
        calls.append("hook")

    control.on_cancel(hook)
    control.discard(hook)
    control.discard(hook)  # twice is fine
    control.cancel()
    assert calls == []
