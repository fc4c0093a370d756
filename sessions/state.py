"""The agent status state machine: which status may follow which.

pending → dispatching → starting → active → stopping → stopped, and any
non-terminal status → failed. An agent lost mid-conversation (starting or
active, no stop asked for) → recovering → active again with a new agent; a
stop (stopping) is never recovered. A few shortcuts exist because events race:
the agent can join (webhook) before the dispatch task records `starting`, and
a room can finish while an agent is still starting or active.
"""

from __future__ import annotations

from .models import AgentStatus as S

ALLOWED: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.DISPATCHING, S.STOPPING, S.FAILED}),
    S.DISPATCHING: frozenset({S.STARTING, S.ACTIVE, S.STOPPING, S.FAILED}),
    S.STARTING: frozenset({S.ACTIVE, S.RECOVERING, S.STOPPING, S.STOPPED, S.FAILED}),
    S.ACTIVE: frozenset({S.RECOVERING, S.STOPPING, S.STOPPED, S.FAILED}),
    # A new agent joins (active), or the visitor stops, leaves or no worker takes over.
    S.RECOVERING: frozenset({S.ACTIVE, S.STOPPING, S.STOPPED, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.STOPPED: frozenset(),
    S.FAILED: frozenset(),
}


def sources_for(target: str) -> list[str]:
    """Every status from which `target` may be reached."""
    return [source for source, targets in ALLOWED.items() if target in targets]


def can_transition(source: str, target: str) -> bool:
    return target in ALLOWED[source]
