"""Conversation sessions: one visitor (or group) talking with one agent in one LiveKit room."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from voiceagents.catalog import AgentMode
from voiceagents.models import Company, VoiceAgent

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class AgentStatus(models.TextChoices):
    PENDING = "pending"
    DISPATCHING = "dispatching"
    STARTING = "starting"
    ACTIVE = "active"
    # The agent was lost (its job or worker died, or its worker drained) without a
    # stop being asked for: a new agent is on its way to the same room.
    RECOVERING = "recovering"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# The one definition of the status sets; migration 0004's SQL holds a copy, checked by a test.
TERMINAL_STATUSES = frozenset({AgentStatus.STOPPED, AgentStatus.FAILED})
LIVE_STATUSES = frozenset(set(AgentStatus) - TERMINAL_STATUSES)
# Live and not being stopped: a session an agent may still join.
WANTS_AGENT_STATUSES = LIVE_STATUSES - {AgentStatus.STOPPING}


class HandoffStatus(models.TextChoices):
    NONE = "", "none"
    REQUESTED = "requested", "waiting for a person"
    JOINED = "joined", "a person joined"
    MISSED = "missed", "nobody joined in time"


END_REASON_AGENT = "ended by the agent"


class ConversationSession(models.Model):
    session_id = models.CharField(max_length=64)
    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="sessions")
    agent = models.ForeignKey(VoiceAgent, on_delete=models.PROTECT, related_name="sessions")
    mode = models.CharField(max_length=20, choices=AgentMode.choices)
    agent_room_name = models.CharField(max_length=128, unique=True)
    agent_worker_id = models.CharField(max_length=128, blank=True)
    agent_identity = models.CharField(max_length=128, blank=True)
    agent_status = models.CharField(
        max_length=20, choices=AgentStatus.choices, default=AgentStatus.PENDING, db_index=True
    )
    agent_started_at = models.DateTimeField(null=True, blank=True)
    agent_stopped_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField()
    # The configuration resolved once at start (profile + allowed overrides);
    # the worker receives exactly this as dispatch metadata.
    config = models.JSONField(default=dict)
    visitor_identity = models.CharField(max_length=128)
    dispatch_id = models.CharField(max_length=128, blank=True)
    # When the latest offer of the session's job was made (stamped before it is), and
    # when a worker last took one (its request handler): an offer no worker took within
    # AGENT_REDISPATCH_AFTER_SECONDS is made again by the watchdog.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    job_taken_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    # How many times an agent lost mid-conversation was replaced (AGENT_MAX_RECOVERIES).
    recovery_count = models.PositiveSmallIntegerField(default=0)
    # Written by the serving worker's main process while the job runs; a stale
    # value means the whole worker is gone (the watchdog recovers the session).
    agent_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Totals reported by the agent worker: llm_prompt_tokens, llm_completion_tokens,
    # stt_audio_seconds, tts_characters, tts_audio_seconds.
    usage = models.JSONField(default=dict, blank=True)
    # Why a stopped session ended, when something other than a hang-up ended it.
    end_reason = models.CharField(max_length=200, blank=True)
    # Handoff to a person (the transfer_to_human tool, "Join" in the admin).
    handoff_status = models.CharField(max_length=20, choices=HandoffStatus.choices, blank=True, default="")
    handoff_reason = models.TextField(blank=True)
    handoff_requested_at = models.DateTimeField(null=True, blank=True)
    handoff_joined_at = models.DateTimeField(null=True, blank=True)
    handoff_missed_at = models.DateTimeField(null=True, blank=True)
    handoff_joined_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    redispatch_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="redispatches"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "conversation_sessions"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["company", "session_id"], name="session_unique_per_company"),
            models.CheckConstraint(
                condition=models.Q(agent_status__in=AgentStatus.values),
                name="session_valid_status",
            ),
            models.CheckConstraint(
                condition=~models.Q(agent_status=AgentStatus.FAILED) | ~models.Q(failure_reason=""),
                name="session_failed_has_reason",
            ),
            models.CheckConstraint(condition=models.Q(mode__in=AgentMode.values), name="session_valid_mode"),
            models.CheckConstraint(
                condition=models.Q(handoff_status__in=HandoffStatus.values), name="session_valid_handoff"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} [{self.agent_status}]"

    @property
    def is_terminal(self) -> bool:
        return self.agent_status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.agent_started_at is None:
            return None
        if self.agent_stopped_at is None:
            return None
        return (self.agent_stopped_at - self.agent_started_at).total_seconds()

    @property
    def handoff_wait_seconds(self) -> float | None:
        """How long the visitor waited (or has waited so far) for a person."""
        from django.utils import timezone

        if self.handoff_requested_at is None:
            return None
        until = self.handoff_joined_at or self.handoff_missed_at
        if until is None:
            until = self.agent_stopped_at if self.is_terminal and self.agent_stopped_at else timezone.now()
        return max((until - self.handoff_requested_at).total_seconds(), 0.0)


class CompanyLiveSessions(models.Model):
    """How many live sessions a company has: the admission counter.

    Kept in step with the sessions table: admission increments it in the start
    transaction (sessions.services.admission), and a database trigger decrements
    it in the statement that ends a session (to stopped or failed) or deletes
    a live one (migration 0004); reconcile repairs any drift. A row of its
    own, not a column of Company: saving a company (the admin) never
    overwrites it, and starts never lock the company row.
    """

    company = models.OneToOneField(Company, primary_key=True, on_delete=models.CASCADE, related_name="+")
    live = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "company_live_sessions"
        verbose_name_plural = "company live sessions"

    def __str__(self) -> str:
        return f"company {self.company_id}: {self.live} live"


class TurnRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class TranscriptTurn(models.Model):
    """One utterance of the conversation, written by the agent worker as it happens."""

    session = models.ForeignKey(ConversationSession, on_delete=models.CASCADE, related_name="turns")
    sequence = models.PositiveIntegerField()
    role = models.CharField(max_length=10, choices=TurnRole.choices)
    # Who spoke: the visitor's or the agent's participant identity and display
    # name; in conference sessions this is what tells speakers apart.
    speaker_identity = models.CharField(max_length=128, blank=True)
    speaker_name = models.CharField(max_length=128, blank=True)
    text = models.TextField()
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    interrupted = models.BooleanField(default=False)
    # Seconds: end_of_turn_delay, transcription_delay (user turns); llm_ttft,
    # tts_ttfb, response_latency = user stopped speaking → agent started (assistant turns).
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "transcript_turns"
        ordering = ["session", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["session", "sequence"], name="turn_unique_sequence"),
            models.CheckConstraint(condition=models.Q(role__in=TurnRole.values), name="turn_valid_role"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.sequence} {self.role}: {self.text[:40]}"


class ToolCall(models.Model):
    """One call the agent's LLM made to a tool, as it happened."""

    session = models.ForeignKey(ConversationSession, on_delete=models.CASCADE, related_name="tool_calls")
    name = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "session_tool_calls"
        ordering = ["session", "created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.session_id} {self.name}"


class VisitorMessage(models.Model):
    """A message the agent took for staff (the take_message tool)."""

    session = models.ForeignKey(ConversationSession, on_delete=models.CASCADE, related_name="messages")
    name = models.CharField(max_length=200)
    contact = models.CharField(max_length=200)
    message = models.TextField(max_length=4000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "session_visitor_messages"
        ordering = ["session", "created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.contact})"
