"""Crash recovery: a conversation outlives its agent.

Two voice workers (`run_voice_agent start`, prewarmed job processes), Celery worker
and beat (the watchdog), livekit-server and Django on 127.0.0.1 (bench/_stack.py).
Offline speech and the echo responder: what is measured is the hand-over, not a model.

Each round is one live conversation (greeting heard, one exchange), then a fault:
- job: SIGKILL of the job process that holds the conversation (as the OOM killer);
- worker: SIGKILL of the whole worker holding it (main process and its job
  processes: a machine lost); a fresh worker replaces it for the next rounds;
- deploy: a rolling deploy, two workers carrying `--deploy-conversations` between
  them: SIGTERM to one worker (drain timeout `--drain`), a fresh one started, then
  SIGTERM to the other.

After each fault the visitor waits for a new agent, hears it, says one more sentence
and hears the reply. Printed, median and p95: fault → new agent seen by the visitor,
fault → first agent audio; turns lost (stored before the fault, missing after);
conversations lost (no new agent, no reply, or the session ended).

    .venv/bin/python bench/bench_recovery.py --job-kills 10 --worker-kills 5 --deploy-conversations 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack as S

# production defaults, written out so the figures say what they were measured with
RECOVERY_ENV = {
    "AGENT_HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "AGENT_HEARTBEAT_TIMEOUT_SECONDS": "2.0",
    "CELERY_WATCHDOG_INTERVAL_SECONDS": "1.0",
    "AGENT_MAX_RECOVERIES": "2",
    "AGENT_RECOVERY_TIMEOUT_SECONDS": "30",
}
GREETING = "Hello, how can I help?"
FIRST, SECOND = "hello world", "what is your name"


@dataclass
class Outcome:
    kind: str
    seen: float | None = None  # fault -> new agent seen (s)
    audio: float | None = None  # fault -> first audio of the new agent (s)
    turns_lost: int = 0
    lost: bool = False
    note: str = ""


class Workers:
    """The agent workers of the run, started and replaced like a supervisor would."""

    def __init__(self, env: dict[str, str], drain: int) -> None:
        self.env = env
        self.drain = drain
        self.procs: list[Any] = []
        self.retired: list[Any] = []

    def start(self) -> Any:
        wenv = {
            **self.env,
            **RECOVERY_ENV,
            "AGENT_NUM_IDLE_PROCESSES": "2",
            "AGENT_DRAIN_TIMEOUT_SECONDS": str(self.drain),
            "VOICE_AGENT_HTTP_PORT": str(S.free_port()),
        }
        proc = S._process(
            [S.PYTHON, "manage.py", "run_voice_agent", "start"], wenv, f"worker-{len(self.procs) + 1}"
        )
        self.procs.append(proc)
        proc.wait_for_output("registered worker", timeout=120)
        S.wait_idle_pool(proc.proc.pid, 2, timeout=120)
        return proc

    def live(self) -> list[Any]:
        return [p for p in self.procs if p.proc.poll() is None]

    def holder(self, worker_id: str) -> Any:
        for proc in self.live():
            if any("registered worker" in line and worker_id in line for line in proc.lines):
                return proc
        raise RuntimeError(f"no live worker registered as {worker_id}")

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()


def job_pid(worker: Any, room: str) -> int:
    found = [
        int(m.group(1))
        for line in list(worker.lines)
        if (m := re.search(rf"job for room {re.escape(room)} in process (\d+)", line))
    ]
    if not found:
        raise RuntimeError(f"no job for room {room} in {worker.name}'s output")
    return found[-1]


def stored_turns(session_id: str) -> list[tuple[int, str, str]]:
    from django.db import connection

    from sessions.models import TranscriptTurn

    try:
        return list(
            TranscriptTurn.objects.filter(session__session_id=session_id)
            .order_by("sequence")
            .values_list("sequence", "role", "text")
        )
    finally:
        connection.close()


def session_worker(session_id: str) -> str:
    from django.db import connection

    try:
        row = S.session_row(session_id)
        return str(row.agent_worker_id) if row is not None else ""
    finally:
        connection.close()


async def wait_worker_id(session_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker_id = await asyncio.to_thread(session_worker, session_id)
        if worker_id.startswith("AW_"):
            return worker_id
        await asyncio.sleep(0.1)  # written by the worker process: no event to await
    raise RuntimeError(f"{session_id}: no worker id within {timeout}s")


class Conversation:
    """A visitor in one live conversation."""

    def __init__(self, st: S.Stack, agent: Any, session_id: str) -> None:
        self.st, self.agent, self.session_id = st, agent, session_id
        self.visitor: Any = None
        self.room = ""

    async def open(self) -> None:
        from tests.visitor import Visitor

        body = await asyncio.to_thread(S.start_session, self.st, self.agent, self.session_id)
        self.room = body["room_name"]
        self.visitor = Visitor(self.session_id)
        await self.visitor.join(body["livekit_url"], body["user_token"])
        await asyncio.wait_for(self.visitor.joined_agent.wait(), 60)
        await self.visitor.wait_for_agent_speech(after=0, timeout=60)
        await self.visitor.wait_until_agent_quiet()
        await self.exchange(FIRST)

    async def exchange(self, sentence: str) -> None:
        pcm, rate, _ = S.speech(sentence)
        ended = await self.visitor.speak(pcm, rate)
        await self.visitor.wait_for_agent_speech(after=ended, timeout=30)
        await self.visitor.wait_until_agent_quiet()

    async def recovered(self, kind: str, fault_at: float, before: list[Any], agent: str) -> Outcome:
        outcome = Outcome(kind)
        try:
            seen = await self.visitor.wait_for_new_agent(other_than=agent, timeout=45)
            outcome.seen = seen - fault_at
            heard = await self.visitor.wait_for_agent_speech(after=seen, timeout=30)
            outcome.audio = heard - fault_at
            await self.visitor.wait_until_agent_quiet()
            await self.exchange(SECOND)
        except (AssertionError, TimeoutError) as exc:
            outcome.lost, outcome.note = True, str(exc)[:200]
        after = {(seq, text) for seq, _, text in await asyncio.to_thread(stored_turns, self.session_id)}
        outcome.turns_lost = sum((seq, text) not in after for seq, _, text in before)
        status = await S.wait_status(self.session_id, ("active",), 5)
        if status != "active":
            outcome.lost, outcome.note = True, outcome.note or f"session {status}"
        return outcome

    async def close(self) -> None:
        if self.visitor is not None:
            await self.visitor.leave()
        await S.wait_status(self.session_id, ("stopped", "failed"), 30)


async def kill_round(st: S.Stack, workers: Workers, agent: Any, kind: str, index: int, tag: str) -> Outcome:
    conversation = Conversation(st, agent, f"rec-{tag}-{kind}-{index}")
    try:
        await conversation.open()
        first = conversation.visitor.agent_identity
        holder = workers.holder(await wait_worker_id(conversation.session_id))
        before = await asyncio.to_thread(stored_turns, conversation.session_id)
        if kind == "job":
            os.kill(job_pid(holder, conversation.room), signal.SIGKILL)
        else:
            holder.signal(signal.SIGKILL)
        fault_at = time.monotonic()
        outcome = await conversation.recovered(kind, fault_at, before, first)
        if kind == "worker":
            workers.retired.append(holder)
            await asyncio.to_thread(workers.start)  # the supervisor's restart
        return outcome
    finally:
        await conversation.close()


def progress(outcome: Outcome) -> Outcome:
    seen = f"{outcome.seen:.2f} s" if outcome.seen is not None else "-"
    audio = f"{outcome.audio:.2f} s" if outcome.audio is not None else "-"
    lost = f" LOST ({outcome.note})" if outcome.lost else ""
    print(
        f"  {outcome.kind}: new agent {seen}, first audio {audio}, turns lost {outcome.turns_lost}{lost}",
        flush=True,
    )
    return outcome


async def deploy_round(st: S.Stack, workers: Workers, agent: Any, n: int, tag: str) -> list[Outcome]:
    conversations = [Conversation(st, agent, f"rec-{tag}-deploy-{i}") for i in range(n)]
    outcomes: list[Outcome] = []
    try:
        for c in conversations:
            await c.open()
        for step in range(2):  # each of the two original workers in turn
            old = workers.live()[0]
            moving = []
            for c in conversations:
                if workers.holder(await wait_worker_id(c.session_id)) is old:
                    moving.append(
                        (c, c.visitor.agent_identity, await asyncio.to_thread(stored_turns, c.session_id))
                    )
            fresh = asyncio.create_task(asyncio.to_thread(workers.start))  # the new version comes up
            old.signal(signal.SIGTERM, group=False)  # as systemd's KillMode=mixed sends it
            fault_at = time.monotonic()
            results = await asyncio.gather(
                *(c.recovered("deploy", fault_at, before, agent_id) for c, agent_id, before in moving)
            )
            outcomes.extend(progress(o) for o in results)
            await fresh
            code = await asyncio.to_thread(old.proc.wait, 60)
            print(f"  deploy step {step + 1}: {len(moving)} conversation(s) moved, old worker exit {code}")
    finally:
        for c in conversations:
            await c.close()
    return outcomes


def report(name: str, outcomes: list[Outcome]) -> None:
    seen = [o.seen for o in outcomes if o.seen is not None]
    audio = [o.audio for o in outcomes if o.audio is not None]
    print(
        f"{name:<22} n={len(outcomes):<3} "
        f"fault→new agent {S.fmt_ms(S.summary(seen), ('median', 'p95', 'max'))} | "
        f"fault→first audio {S.fmt_ms(S.summary(audio), ('median', 'p95', 'max'))} | "
        f"turns lost {sum(o.turns_lost for o in outcomes)} | "
        f"conversations lost {sum(o.lost for o in outcomes)}"
    )
    for o in outcomes:
        if o.lost:
            print(f"    lost: {o.note}")


async def run(args: argparse.Namespace) -> None:
    env = S.prepare()
    # Celery (and its beat, the watchdog) with the same recovery settings as the workers
    celery_env = {**env, **RECOVERY_ENV}
    from tests.processes import celery_beat

    with S.stack(worker=False, stub=False, django_env=RECOVERY_ENV, log_prefix="recovery") as st:
        st.env.update(RECOVERY_ENV)
        workers = Workers(st.env, drain=args.drain)
        with celery_beat(celery_env) as beat:
            st.procs["beat"] = beat
            try:
                for _ in range(2):
                    workers.start()
                agent = await asyncio.to_thread(
                    S.make_agent, greeting_message=GREETING, **S.OFFLINE_PROVIDERS
                )
                tag = str(int(time.time()))
                jobs = [
                    progress(await kill_round(st, workers, agent, "job", i, tag))
                    for i in range(args.job_kills)
                ]
                kills = [
                    progress(await kill_round(st, workers, agent, "worker", i, tag))
                    for i in range(args.worker_kills)
                ]
                deploy = (
                    await deploy_round(st, workers, agent, args.deploy_conversations, tag)
                    if args.deploy_conversations
                    else []
                )
            finally:
                for i, proc in enumerate(workers.procs):
                    st.procs[f"agent-{i + 1}"] = proc
                workers.stop_all()
        print()
        report("job process SIGKILL", jobs)
        report("whole worker SIGKILL", kills)
        report("rolling deploy", deploy)
        report("all", jobs + kills + deploy)
        print(S.machine_note("end"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job-kills", type=int, default=10)
    parser.add_argument("--worker-kills", type=int, default=5)
    parser.add_argument("--deploy-conversations", type=int, default=4)
    parser.add_argument("--drain", type=int, default=3, help="the deployed workers' drain timeout, seconds")
    args = parser.parse_args()
    if min(args.job_kills, args.worker_kills, args.deploy_conversations) < 0:
        parser.error("counts must be >= 0")
    asyncio.run(asyncio.wait_for(run(args), timeout=1800))


if __name__ == "__main__":
    main()
