"""The conference mixer: many live participant streams in, one clocked stream (or one tap each) out.

Why not `livekit.rtc.AudioMixer`: it is pull-driven. Every round it waits for
*every* stream to deliver a block, up to `stream_timeout_ms` per stream, so a
participant whose stream stalls (muted, bad network, leaving) delays the
output for everyone; the output then runs slower than real time while the
live streams keep queueing frames behind it: drift, and buffering without
bound. It also starts one task per stream per block.

This mixer is push-in, clock-out:

- a reader task per stream appends each frame to that stream's block queue
  and never waits for anyone else;
- one clock produces a block every `frame_ms` of monotonic time, computed
  from the start time (sleeps never add up to drift), from whatever each
  stream holds. A stream with nothing queued (stalled, muted, just joined)
  contributes silence to that block: nobody waits for it.
- every queue is bounded: a stream starts contributing once it holds
  `jitter_ms` (absorbing the arrival jitter of the event loop), and when it
  holds more than `max_latency_ms` (a burst after a stall) the oldest audio
  is dropped back to `jitter_ms`. Added latency stays within
  `max_latency_ms` whatever the streams do; a stream that ends or is removed
  is simply dropped.
- mixing is vectorised across streams: one stack, one sum, one energy
  computation per block, whatever the number of participants.

Two outputs, one per conference STT strategy:

- the mix (async iterator of 10 ms `rtc.AudioFrame`s, also offered as an
  AgentSession `AudioInput`) for "mixed", where one STT stream hears the
  room. The mixer keeps a per-stream energy history so that an utterance
  heard in the mix can be attributed to whoever was loudest during it
  (`dominant_source`), even if they have left since.
- per-stream taps for "per_participant": each stream's frames, passed on as
  they arrive (a speech recogniser wants every frame, in order, and no jitter
  buffer), plus silence from the clock while the stream stalls, so a
  per-participant VAD always sees time pass and ends an utterance even when
  its speaker mutes or drops mid-sentence.

When the event loop itself stalls (a slow callback elsewhere in the job), the
clock owes several blocks at once while the readers have not yet queued the
frames that arrived meanwhile. It then produces one block per turn of the
loop, so the readers catch up in between, and a stream's queue only counts as
too deep beyond what the clock owes: a loop stall costs no audio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice.io import AudioInput

logger = logging.getLogger("agentconnect.worker.mixer")

Tap = Callable[[rtc.AudioFrame], None]


@dataclass
class MixerStats:
    blocks: int = 0  # blocks produced by the clock
    skipped_blocks: int = 0  # never produced: the event loop was blocked for too long
    underruns: int = 0  # a stream that was contributing had nothing when the clock came
    trimmed_blocks: int = 0  # dropped to bring a stream back under max_latency_ms
    output_dropped: int = 0  # mixed blocks dropped because the consumer fell behind
    max_output_queue: int = 0  # most mixed blocks ever waiting for the consumer


@dataclass
class _Source:
    key: str
    tap: Tap | None
    queue: collections.deque[rtc.AudioFrame] = field(default_factory=collections.deque)
    partial: np.ndarray | None = None  # samples short of a whole block
    reader: asyncio.Task[None] | None = None
    primed: bool = False
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    resampler: rtc.AudioResampler | None = None
    left_at: int | None = None  # block index at which the source was removed
    last_frame_block: int = 0  # block index when its last frame arrived
    ended: bool = False  # its stream ended: play out what it holds, then drop it


class ConferenceMixer:
    """Clocked mixer of live streams; see the module docstring for the design."""

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        frame_ms: int = 10,
        jitter_ms: int = 20,
        max_latency_ms: int = 100,
        output_capacity_ms: int = 500,
        history_seconds: float = 60.0,
        mix: bool = True,
        levels: bool = True,
        max_catchup_blocks: int = 50,
        stall_ms: int = 100,
    ) -> None:
        if max_latency_ms < jitter_ms + frame_ms:
            raise ValueError("max_latency_ms must leave room for jitter_ms plus one block")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.block = sample_rate * frame_ms // 1000
        self._jitter_blocks = max(1, jitter_ms // frame_ms)
        self._max_blocks = max_latency_ms // frame_ms
        self._history = max(1, int(history_seconds * 1000 / frame_ms))
        self._mix_enabled = mix
        self._levels_enabled = levels
        self._ones = np.ones(64, dtype=np.float32)
        self._max_catchup = max_catchup_blocks
        self._stall_blocks = max(1, stall_ms // frame_ms)
        self._queueing = mix or levels
        self._sources: dict[str, _Source] = {}
        # removed sources stay here for `history_seconds`, so an utterance that ends
        # as its speaker leaves can still be attributed to them
        self._departed: dict[str, _Source] = {}
        self._out: collections.deque[rtc.AudioFrame] = collections.deque(
            maxlen=max(1, output_capacity_ms // frame_ms)
        )
        self._out_ready = asyncio.Event()
        self._closed = False
        self.stats = MixerStats()
        self._silence = rtc.AudioFrame(bytes(self.block * 2), sample_rate, 1, self.block)
        self._index = 0  # number of the next block (skipped blocks count)
        # block i covers wall-clock time [t0 + i*frame, t0 + (i+1)*frame)
        self._t0_wall = time.time()
        self._clock: asyncio.Handle | None = None

    # --- sources ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock (needs a running event loop)."""
        if self._clock is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._clock_start = loop.time() - self._index * self.frame_ms / 1000
            self._t0_wall = time.time() - self._index * self.frame_ms / 1000
            self._schedule_next()

    def add_source(
        self, key: str, stream: AsyncIterator[Any] | None = None, *, tap: Tap | None = None
    ) -> None:
        """Mix `stream` (an rtc.AudioStream, or any async iterator of frames) under `key`.

        Replaces a source with the same key (a republished track). Without a
        stream, feed the source with `push()`. `tap` receives this source's own
        clocked blocks.
        """
        if self._closed:
            raise RuntimeError("mixer closed")
        self.remove_source(key)
        previous = self._departed.pop(key, None)
        source = _Source(key=key, tap=tap, last_frame_block=self._index)
        if previous is not None and previous.left_at is not None:
            # the same participant again: keep their recent history, the time away as silence
            source.levels = previous.levels
            gap = np.arange(previous.left_at, min(self._index, previous.left_at + self._history))
            source.levels[gap % self._history] = 0.0
        else:
            source.levels = np.zeros(self._history, dtype=np.float32)
        self._sources[key] = source
        if stream is not None:
            source.reader = asyncio.create_task(self._read(source, stream), name=f"mixer-read-{key}")

    def remove_source(self, key: str) -> None:
        source = self._sources.pop(key, None)
        if source is None:
            return
        self._depart(source)
        if source.reader is not None and not source.reader.done():
            source.reader.cancel()

    def has_source(self, key: str) -> bool:
        return key in self._sources

    @property
    def source_keys(self) -> list[str]:
        return list(self._sources)

    def queued_ms(self, key: str) -> int:
        source = self._sources.get(key)
        return 0 if source is None else len(source.queue) * self.frame_ms

    def push(self, key: str, frame: rtc.AudioFrame) -> None:
        source = self._sources.get(key)
        if source is not None:
            self._write(source, frame)

    def _depart(self, source: _Source) -> None:
        source.left_at = self._index
        source.tap = None
        source.queue.clear()
        self._departed[source.key] = source
        horizon = self._index - self._history
        for key in [k for k, s in self._departed.items() if (s.left_at or 0) < horizon]:
            del self._departed[key]

    async def _read(self, source: _Source, stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                # rtc.AudioStream yields AudioFrameEvent; plain iterators may yield frames
                self._write(source, getattr(item, "frame", item))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("mixer source %s failed; dropping it", source.key, exc_info=True)
        finally:
            source.ended = True
            if self._sources.get(source.key) is source and not source.queue:
                del self._sources[source.key]
                self._depart(source)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _write(self, source: _Source, frame: rtc.AudioFrame) -> None:
        source.last_frame_block = self._index
        if (
            source.partial is None
            and frame.samples_per_channel == self.block
            and frame.sample_rate == self.sample_rate
            and frame.num_channels == 1
        ):
            # the usual case (rtc.AudioStream at our rate, 10 ms frames): pass the frame
            # itself on; it is copied once, when its block is mixed
            self._accept(source, frame)
            return
        if frame.sample_rate != self.sample_rate:
            if source.resampler is None:
                source.resampler = rtc.AudioResampler(frame.sample_rate, self.sample_rate, num_channels=1)
            for out in source.resampler.push(_mono(frame)):
                self._rechunk(source, np.frombuffer(out.data, dtype=np.int16))
            return
        self._rechunk(source, np.frombuffer(_mono(frame).data, dtype=np.int16))

    def _accept(self, source: _Source, frame: rtc.AudioFrame) -> None:
        if source.tap is not None:
            source.tap(frame)
        if self._queueing:
            source.queue.append(frame)

    def _rechunk(self, source: _Source, samples: np.ndarray) -> None:
        n = self.block
        if source.partial is not None:
            samples = np.concatenate((source.partial, samples))
            source.partial = None
        whole = samples.shape[0] - samples.shape[0] % n
        for start in range(0, whole, n):
            self._accept(source, rtc.AudioFrame(samples[start : start + n].tobytes(), self.sample_rate, 1, n))
        if whole < samples.shape[0]:
            source.partial = samples[whole:].copy()

    # --- the clock --------------------------------------------------------------------

    def _schedule_next(self) -> None:
        loop = asyncio.get_running_loop()
        due_at = self._clock_start + (self._index + 1) * self.frame_ms / 1000
        self._clock = loop.call_at(due_at, self._tick)

    def _tick(self) -> None:
        # A timer callback rather than a sleeping task: no coroutine step, no future
        # per block. Block i is due at start + (i + 1) * period, computed from the
        # start time, never by adding up sleeps, so the clock cannot drift.
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        due = int((loop.time() - self._clock_start) * 1000 / self.frame_ms) - self._index
        if due <= 0:
            self._schedule_next()
            return
        if due > self._max_catchup:
            # the loop was blocked for very long: that audio is too old to be worth
            # mixing late; skip ahead rather than burst stale blocks
            skip = due - self._max_catchup
            self.stats.skipped_blocks += skip
            self._index += skip
            due = self._max_catchup
        try:
            self.mix_block(owed=due - 1)
        except Exception:
            logger.exception("conference mixer block failed")
            self._index += 1
        if due > 1:
            # behind: one block per turn of the loop, so the readers can queue the
            # frames that arrived while the loop was busy
            self._clock = loop.call_soon(self._tick)
        else:
            self._schedule_next()

    def mix_block(self, owed: int = 0) -> rtc.AudioFrame | None:
        """Produce the next block from what every source holds (the clock calls this).

        `owed`: further blocks the clock is behind by; a stream may hold that much
        more without counting as too deep, and a silent stream is not yet stalled.
        """
        slot = self._index % self._history
        limit = self._max_blocks + owed
        contributing: list[_Source] = []
        frames: list[rtc.AudioFrame] = []
        silence = self._silence
        finished: list[_Source] = []
        for source in self._sources.values():
            queue = source.queue
            if source.ended and not queue:
                finished.append(source)
                continue
            if (
                source.tap is not None
                and not owed
                and self._index - source.last_frame_block >= self._stall_blocks
            ):
                source.tap(silence)  # stalled: its VAD must still hear time pass
            if len(queue) > limit:
                trim = len(queue) - self._jitter_blocks - owed
                for _ in range(trim):
                    queue.popleft()
                self.stats.trimmed_blocks += trim
            if not source.primed and (len(queue) >= self._jitter_blocks or source.ended):
                source.primed = True
            if source.primed and queue:
                contributing.append(source)
                frames.append(queue.popleft())
            else:
                if source.primed and self._queueing:
                    source.primed = False  # a gap: wait for jitter_ms again before using it
                    self.stats.underruns += 1
                source.levels[slot] = 0.0
        for source in finished:
            if self._sources.get(source.key) is source:
                del self._sources[source.key]
                self._depart(source)
        out: rtc.AudioFrame | None = None
        k = len(frames)
        if k and (self._levels_enabled or (self._mix_enabled and k > 1)):
            # one copy of all blocks, then a handful of numpy calls whatever k is
            stack = np.frombuffer(b"".join([f.data for f in frames]), dtype=np.int16)
            x = stack.astype(np.float32).reshape(k, self.block)
            if self._levels_enabled:
                levels = np.einsum("ij,ij->i", x, x) / self.block
                for source, level in zip(contributing, levels.tolist(), strict=True):
                    source.levels[slot] = level
            if self._mix_enabled and k > 1:
                mixed = self._ones[:k] @ x if k <= self._ones.shape[0] else x.sum(axis=0)
                np.minimum(np.maximum(mixed, -32768.0, out=mixed), 32767.0, out=mixed)
                out = rtc.AudioFrame(mixed.astype(np.int16).tobytes(), self.sample_rate, 1, self.block)
        if self._mix_enabled and out is None:
            out = frames[0] if k == 1 else silence
        self.stats.blocks += 1
        self._index += 1
        if out is not None:
            if len(self._out) == self._out.maxlen:
                self.stats.output_dropped += 1
            self._out.append(out)
            self.stats.max_output_queue = max(self.stats.max_output_queue, len(self._out))
            self._out_ready.set()
        return out

    # --- output -----------------------------------------------------------------------

    def __aiter__(self) -> ConferenceMixer:
        return self

    async def __anext__(self) -> rtc.AudioFrame:
        while not self._out:
            if self._closed:
                raise StopAsyncIteration
            self._out_ready.clear()
            await self._out_ready.wait()
        return self._out.popleft()

    def take_waiting(self) -> list[rtc.AudioFrame]:
        """Every mixed block already produced and not yet consumed."""
        waiting = list(self._out)
        self._out.clear()
        return waiting

    # --- attribution ------------------------------------------------------------------

    def energy_between(self, start: float, end: float) -> dict[str, float]:
        """Each source's summed block energy between two wall-clock times (time.time())."""
        period = self.frame_ms / 1000
        first = max(int((start - self._t0_wall) / period), self._index - self._history, 0)
        last = min(int((end - self._t0_wall) / period) + 1, self._index)
        energies: dict[str, float] = {}
        for key, source in [*self._departed.items(), *self._sources.items()]:
            stop = last if source.left_at is None else min(last, source.left_at)
            if stop > first:
                energies[key] = float(source.levels[np.arange(first, stop) % self._history].sum())
        return energies

    def dominant_source(self, start: float, end: float, *, floor: float = 1e4) -> str | None:
        """The source that put the most energy into the mix between `start` and `end`.

        `floor` (summed mean-square per block) ignores sources that only
        breathed; None when nobody was audible.
        """
        energies = self.energy_between(start, end)
        if not energies:
            return None
        key, energy = max(energies.items(), key=lambda kv: kv[1])
        return key if energy >= floor else None

    # --- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        self._out_ready.set()
        tasks = [s.reader for s in self._sources.values() if s.reader is not None]
        self._sources.clear()
        self._departed.clear()
        if self._clock is not None:
            self._clock.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class MixerAudioInput(AudioInput):
    """The mix as an AgentSession audio input (set on `session.input.audio` before start).

    When the session has fallen behind (a busy event loop), every block waiting
    is handed over at once, as one frame: the session catches up in one step
    instead of one loop turn per block, so the backlog cannot become latency.
    """

    def __init__(self, mixer: ConferenceMixer) -> None:
        super().__init__(label="conference-mixer")
        self._mixer = mixer

    async def __anext__(self) -> rtc.AudioFrame:
        first = await self._mixer.__anext__()
        waiting = self._mixer.take_waiting()
        if not waiting:
            return first
        return rtc.combine_audio_frames([first, *waiting])


def _mono(frame: rtc.AudioFrame) -> rtc.AudioFrame:
    if frame.num_channels == 1:
        return frame
    samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    mono = samples.mean(axis=1).astype(np.int16)
    return rtc.AudioFrame(mono.tobytes(), frame.sample_rate, 1, mono.shape[0])
