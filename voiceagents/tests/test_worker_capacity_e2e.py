"""Memory limit and recycling with a real worker process, a real room and a visitor."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessions.models import AgentStatus
from tests.factories import VoiceAgentFactory
from tests.helpers import run_async, wait_for
from tests.processes import celery_worker
from tests.visitor import Visitor
from voiceagents.providers.offline_tts import synthesize_pcm
from voiceagents.worker.server import EXIT_RECYCLE

from .conftest import free_port, start_agent_worker
from .test_voice_e2e import OFFLINE, SENTENCE, converse, start_session, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


async def one_more_turn(visitor: Visitor) -> None:
    pcm, rate = synthesize_pcm(SENTENCE)
    ended = await visitor.speak(pcm, rate)
    await visitor.wait_for_agent_speech(after=ended, timeout=60)
    await visitor.wait_until_agent_quiet()


def test_a_job_process_over_the_memory_limit_finishes_its_conversation(
    live_server: Any, transactional_db: Any
) -> None:
    """Every job process is over a 1 MB limit: the worker says so, the conversation goes on
    (the process is not killed mid-call) and ends as the visitor leaves, `stopped`."""
    worker = start_agent_worker(AGENT_JOB_MEMORY_LIMIT_MB="1", AGENT_JOB_MEMORY_KILL_MB="0")
    agent = VoiceAgentFactory(**OFFLINE)
    try:
        with celery_worker():
            body = start_session(agent, "e2e-memory-limit")

            async def scenario() -> None:
                visitor = await converse(body)
                await asyncio.to_thread(worker.wait_for_output, "over AGENT_JOB_MEMORY_LIMIT_MB", 30)
                await one_more_turn(visitor)  # still answering after the limit was noticed
                assert await asyncio.to_thread(status, "e2e-memory-limit") == AgentStatus.ACTIVE
                await visitor.leave()

            run_async(scenario(), timeout=240)
            wait_for(
                lambda: status("e2e-memory-limit") == AgentStatus.STOPPED, timeout=30, what="session stopped"
            )
        assert worker.proc.poll() is None  # a job process over the limit does not recycle the worker
    finally:
        worker.stop()
        print(f"--- worker output ---\n{worker.tail(150)}")


def test_recycling_waits_for_the_conversation_then_exits_for_a_fresh_worker(
    live_server: Any, transactional_db: Any
) -> None:
    """AGENT_RECYCLE_AFTER_CONVERSATIONS=1: the worker is due after its first conversation,
    keeps serving it to the end, and only then exits EXIT_RECYCLE."""
    worker = start_agent_worker(
        mode="start",
        AGENT_RECYCLE_AFTER_CONVERSATIONS="1",
        AGENT_NUM_IDLE_PROCESSES="1",
        VOICE_AGENT_HTTP_PORT=str(free_port()),
    )
    agent = VoiceAgentFactory(**OFFLINE)
    try:
        with celery_worker():
            body = start_session(agent, "e2e-recycle")

            async def scenario() -> None:
                visitor = await converse(body)
                await one_more_turn(visitor)
                assert worker.proc.poll() is None  # due, but its conversation is still on
                assert await asyncio.to_thread(status, "e2e-recycle") == AgentStatus.ACTIVE
                await visitor.leave()

            run_async(scenario(), timeout=240)
            wait_for(lambda: status("e2e-recycle") == AgentStatus.STOPPED, timeout=30, what="session stopped")
            code = worker.proc.wait(timeout=60)
        assert code == EXIT_RECYCLE, worker.tail()
        assert "replacing this worker" in worker.tail(200)
    finally:
        worker.stop()
        print(f"--- worker output ---\n{worker.tail(150)}")
