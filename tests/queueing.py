"""Session tasks kept from the broker in tests that drive a session themselves."""

from __future__ import annotations

from typing import Any

import pytest

from sessions import tasks

SESSION_TASKS = (tasks.dispatch_agent, tasks.stop_agent)


def tasks_not_queued(patch: pytest.MonkeyPatch) -> None:
    """Starts, stops and re-dispatches queue nothing: the test moves the session itself."""
    for task in SESSION_TASKS:
        patch.setattr(task, "delay", lambda *args, **kwargs: None)


def tasks_run_here(patch: pytest.MonkeyPatch) -> None:
    """Each session task runs in this process when queued (the real task code, no broker)."""
    for task in SESSION_TASKS:

        def run(*args: Any, task: Any = task, **kwargs: Any) -> Any:
            return task.apply(args=args, kwargs=kwargs)

        patch.setattr(task, "delay", run)
