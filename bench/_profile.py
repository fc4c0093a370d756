"""Where a job process's CPU goes: py-spy samples sorted into the stages of a conversation.

`record()` attaches py-spy (requirements-dev.txt) to running processes without
pausing them (--nonblocking) and collects collapsed stacks of the threads that
were on a CPU (idle waits are excluded by py-spy). `breakdown()` files each
stack under one stage: scanning from the innermost frame outwards, the first
frame whose file matches a stage's pattern decides. Frames of asyncio,
threading, concurrent.futures and numpy decide nothing by themselves (they
serve every stage), so a stack made only of them counts as the event loop or
as a thread-pool hand-off.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# (stage, pattern on a frame's "function (file:line)" text); first match from the leaf wins
STAGES: tuple[tuple[str, str], ...] = (
    (
        "VAD",
        r"silero/|onnxruntime|local_inference|speech_end\.py|conversation_vad\.py|agents/vad\.py"
        r"|inference/vad\.py",
    ),
    ("transcription sync", r"voice/transcription/|worker/captions\.py|_speaking_rate"),
    ("metrics", r"agents/metrics|agents/telemetry|opentelemetry|prometheus_client|voice/report"),
    ("DB", r"django/|psycopg|asgiref|worker/reporting\.py|sessions/"),
    ("STT", r"agents/stt/|plugins/openai/stt|plugins/deepgram|plugins/groq/stt|offline_stt|sphinx"),
    ("LLM", r"agents/llm/|plugins/openai/llm|echo_llm|site-packages/openai/"),
    (
        "TTS + publish",
        r"agents/tts/|plugins/openai/tts|offline_tts|room_io/_output|rtc/audio_source"
        r"|agents/voice/io\.py|utils/audio\.py.*AudioByteStream",
    ),
    (
        "audio in (FFI, AudioStream, resampling)",
        r"rtc/audio_stream|rtc/audio_resampler|rtc/_ffi_client|rtc/audio_frame|room_io/_input"
        r"|rtc/_proto|rtc/room\.py|rtc/_utils",
    ),
    ("HTTP clients", r"aiohttp/|httpx|httpcore|anyio/|h11/|ssl\.py"),
    (
        "agent state (session, activity, speech)",
        r"voice/agent_activity|voice/agent_session|voice/generation|voice/speech_handle|voice/room_io"
        r"|voice/audio_recognition|voice/agent\.py|voice/events|worker/conversation|agents/utils/",
    ),
    ("logging", r"logging/|log_queue|json_log|structlog"),
)
NEUTRAL = r"asyncio/|threading\.py|concurrent/futures|selectors\.py|numpy/|queue\.py|contextvars|<frozen"
HANDOFF = r"concurrent/futures/thread\.py|call_soon_threadsafe|_write_to_self"
# a thread waiting, which py-spy --nonblocking cannot always tell from one running: the
# loop in epoll, an idle pool thread at its queue, a lock or condition wait
IDLE_LEAF = (
    r"^EpollSelector\.select |^_worker \(concurrent/futures/thread\.py:81\)|^Condition\.wait |^Event\.wait \(threading"
    r"|^Thread\.join|^_wait_for_tstate_lock|^select \(|^sleep \("
)
ORDER = [name for name, _ in STAGES] + ["thread-pool hand-offs", "event loop itself", "other"]

_COMPILED = [(name, re.compile(pattern)) for name, pattern in STAGES]
_NEUTRAL = re.compile(NEUTRAL)
_HANDOFF = re.compile(HANDOFF)
_IDLE_LEAF = re.compile(IDLE_LEAF)
# one frame of py-spy's raw format: "function (path/to/file.py:123)"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None or (Path(sys.executable).parent / "py-spy").exists()


def _py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else "py-spy"


def stage_of(frames: list[str]) -> str:
    """The stage a stack (outermost frame first) belongs to."""
    for frame in reversed(frames):
        if _NEUTRAL.search(frame):
            continue
        for name, pattern in _COMPILED:
            if pattern.search(frame):
                return name
    if any(_HANDOFF.search(frame) for frame in frames):
        return "thread-pool hand-offs"
    if any("asyncio/" in frame for frame in frames):
        return "event loop itself"
    return "other"


@dataclass
class Breakdown:
    samples: Counter[str]
    total: int
    seconds: float
    rate: int
    processes: int
    top_other: list[tuple[str, int]]
    top_loop: list[tuple[str, int]]
    idle: int = 0
    # CPU seconds per second the profiled processes used meanwhile (psutil), if measured
    measured_cores: float | None = None

    def cores(self, stage: str) -> float:
        """Cores this stage used, summed over the profiled processes: its share of the
        on-CPU samples times the CPU the processes used (sampling alone undercounts)."""
        if self.measured_cores is not None:
            return self.measured_cores * self.samples[stage] / max(self.total, 1)
        return self.samples[stage] / self.rate / max(self.seconds, 1e-9)


def parse(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        # py-spy prefixes the thread (and with --subprocesses the process) as frames
        frames = [f for f in head.split(";") if not f.startswith(("thread (", "process "))]
        stacks.append((frames, int(count)))
    return stacks


def breakdown(texts: list[str], *, seconds: float, rate: int) -> Breakdown:
    samples: Counter[str] = Counter()
    other: Counter[str] = Counter()
    loop: Counter[str] = Counter()
    idle = 0
    for text in texts:
        for frames, count in parse(text):
            if not frames or not frames[-1] or _IDLE_LEAF.search(frames[-1]):
                idle += count
                continue
            stage = stage_of(frames)
            samples[stage] += count
            if stage == "other" and frames:
                other[frames[-1]] += count
            elif stage in ("event loop itself", "thread-pool hand-offs") and frames:
                loop[" <- ".join(reversed(frames[-3:]))] += count
    return Breakdown(
        samples=samples,
        total=sum(samples.values()),
        seconds=seconds,
        rate=rate,
        processes=len(texts),
        top_other=other.most_common(5),
        top_loop=loop.most_common(6),
        idle=idle,
    )


def start(pids: list[int], *, seconds: float, rate: int) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """Attach py-spy to each pid for `seconds`; collect with `finish()`."""
    out = []
    for pid in pids:
        path = Path(tempfile.mkstemp(prefix=f"pyspy-{pid}-", suffix=".txt")[1])
        proc = subprocess.Popen(
            [
                _py_spy(),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--duration",
                str(max(1, round(seconds))),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out.append((proc, path))
    return out


def finish(running: list[tuple[subprocess.Popen[bytes], Path]], timeout: float) -> list[str]:
    texts = []
    for proc, path in running:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        texts.append(path.read_text() if path.exists() else "")
        path.unlink(missing_ok=True)
    return texts


def print_breakdown(b: Breakdown, conversations: int, label: str = "") -> None:
    print(
        f"\n== where a job process's CPU goes{label}: py-spy, {b.processes} job processes"
        f" ({conversations} conversations), {b.seconds:.0f} s at {b.rate} Hz, {b.total} on-CPU samples"
        f" ({b.idle} idle waits left out)"
    )
    if b.measured_cores is not None:
        print(
            f"   cores/conv: a stage's share x the {b.measured_cores:.3f} cores the processes used (psutil)"
        )
    print(f"   {'stage':<42} {'share':>6} {'cores/conv':>10}")
    for stage in ORDER:
        if not b.samples[stage]:
            continue
        print(
            f"   {stage:<42} {100 * b.samples[stage] / max(b.total, 1):>5.1f}%"
            f" {b.cores(stage) / max(conversations, 1):>10.4f}"
        )
    total = sum(b.cores(s) for s in ORDER) / max(conversations, 1)
    print(f"   {'all':<42} {100.0:>5.1f}% {total:>10.4f}")
    if b.top_loop:
        print("   most sampled stacks of the event loop and the hand-offs (leaf first):")
        for frame, count in b.top_loop:
            print(f"     {count:>5}  {frame[:150]}")
    if b.top_other:
        print("   most sampled leaves filed under other:")
        for frame, count in b.top_other:
            print(f"     {count:>5}  {frame[:110]}")


if __name__ == "__main__":
    # re-read saved raw stacks: python bench/_profile.py FILE [CONVERSATIONS]
    raw = Path(sys.argv[1]).read_text()
    print_breakdown(breakdown([raw], seconds=20, rate=100), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
