"""Every write to a conversation session goes through here, one module per topic:

- lifecycle: the transition table and `session_transition`, the one door for status changes;
- admission: a start counts itself in, or is refused at a limit;
- start_stop: start, stop, widget token and staff re-dispatch;
- dispatch: queueing the session tasks, and what the dispatch and stop tasks do;
- events: LiveKit webhooks and the agent workers' reports, an agent lost and recovered;
- reconcile: the database brought in line with LiveKit, and the watchdog of lost workers (Celery beat).
"""

from .admission import session_admit
from .dispatch import session_dispatch, session_dispatch_again, session_finish_stop, session_task_queue
from .events import (
    session_agent_finished,
    session_agent_joined,
    session_agent_left,
    session_agent_lost,
    session_handle_webhook,
    session_recover,
    session_room_finished,
)
from .lifecycle import ALLOWED, session_fail, session_transition, sources_for
from .reconcile import (
    ReconcileReport,
    WatchdogReport,
    live_counters_repair,
    sessions_reconcile,
    sessions_watchdog,
)
from .start_stop import (
    StartResult,
    session_redispatch,
    session_start,
    session_stop,
    session_stop_for_company,
    session_widget_token,
)

__all__ = [
    "ALLOWED",
    "ReconcileReport",
    "WatchdogReport",
    "StartResult",
    "live_counters_repair",
    "session_admit",
    "session_agent_finished",
    "session_agent_joined",
    "session_agent_left",
    "session_agent_lost",
    "session_dispatch",
    "session_dispatch_again",
    "session_fail",
    "session_finish_stop",
    "session_handle_webhook",
    "session_recover",
    "session_redispatch",
    "session_room_finished",
    "session_start",
    "session_stop",
    "session_stop_for_company",
    "session_task_queue",
    "session_transition",
    "session_widget_token",
    "sessions_reconcile",
    "sessions_watchdog",
    "sources_for",
]
