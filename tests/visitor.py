"""A simulated visitor: joins a room with the livekit rtc SDK, speaks real audio, hears the agent.

Used by the end-to-end tests and the benchmarks. Speech comes from espeak-ng
(offline); "hearing" is energy above a threshold in the frames the visitor
receives, with the time each burst of agent audio began.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

SAMPLE_RATE = 48000
FRAME_MS = 10
SILENCE_RMS = 300.0  # int16 RMS; agent speech is far above, comfort noise far below


@dataclass
class Heard:
    """Audio the visitor received from one remote participant."""

    identity: str
    bursts: list[float] = field(default_factory=list)  # monotonic time each burst of sound began
    frames_with_sound: int = 0
    last_sound: float = 0.0  # monotonic time of the last frame with sound
    _in_burst: bool = False
    _quiet_frames: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def feed(self, frame: rtc.AudioFrame) -> None:
        samples = np.frombuffer(frame.data, dtype=np.int16)
        loud = samples.size > 0 and float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) > SILENCE_RMS
        if loud:
            self.frames_with_sound += 1
            self.last_sound = time.monotonic()
            self._quiet_frames = 0
            if not self._in_burst:
                self._in_burst = True
                self.bursts.append(time.monotonic())
                self.changed.set()
        elif self._in_burst:
            self._quiet_frames += 1
            if self._quiet_frames * FRAME_MS >= 400:  # 400 ms of quiet ends a burst
                self._in_burst = False


class Visitor:
    def __init__(self, name: str = "visitor") -> None:
        self.name = name
        self.room = rtc.Room()
        self.heard: dict[str, Heard] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._source: rtc.AudioSource | None = None
        self.joined_agent = asyncio.Event()
        self.agent_identity: str | None = None
        # every agent that joined, with the monotonic time the visitor saw it
        self.agents_seen: list[tuple[str, float]] = []
        self._agent_changed = asyncio.Event()

    async def join(self, url: str, token: str) -> None:
        @self.room.on("track_subscribed")
        def _on_track(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
        ) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                heard = self.heard.setdefault(participant.identity, Heard(participant.identity))
                task = asyncio.create_task(self._listen(track, heard))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        @self.room.on("participant_connected")
        def _on_participant(participant: rtc.RemoteParticipant) -> None:
            self._note_agent(participant)

        await self.room.connect(url, token)
        for participant in self.room.remote_participants.values():
            self._note_agent(participant)

    def _note_agent(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.agent_identity = participant.identity
            self.agents_seen.append((participant.identity, time.monotonic()))
            self.joined_agent.set()
            self._agent_changed.set()

    async def wait_for_new_agent(self, *, other_than: str, timeout: float) -> float:
        """Until an agent joins that is neither `other_than` nor any agent seen before this
        call (after two recoveries the first agent is also "other than" the current one);
        the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        known = {identity for identity, _ in self.agents_seen} | {other_than}
        while True:
            for identity, seen in self.agents_seen:
                if identity not in known:
                    return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no agent other than {other_than} within {timeout}s")
            self._agent_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._agent_changed.wait(), remaining)

    async def _listen(self, track: rtc.Track, heard: Heard) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for event in stream:
                heard.feed(event.frame)
        finally:
            await stream.aclose()

    def agent_heard(self) -> Heard:
        assert self.agent_identity, "no agent in the room"
        return self.heard.setdefault(self.agent_identity, Heard(self.agent_identity))

    async def wait_for_agent_speech(self, *, after: float, timeout: float) -> float:
        """Monotonic time at which agent audio began after `after`."""
        deadline = time.monotonic() + timeout
        while True:
            heard = self.agent_heard()
            later = [t for t in heard.bursts if t >= after]
            if later:
                return later[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no agent speech within {timeout}s")
            heard.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(heard.changed.wait(), remaining)

    async def wait_until_agent_quiet(self, *, quiet_for: float = 0.6, timeout: float = 30) -> None:
        """Until no agent sound has arrived for `quiet_for` seconds (its sentence has ended)."""
        deadline = time.monotonic() + timeout
        heard = self.agent_heard()
        while time.monotonic() < deadline:
            before = heard.frames_with_sound
            await asyncio.sleep(quiet_for)  # a quiet period is an absence of events: it can only be timed
            if heard.frames_with_sound == before:
                return
        raise AssertionError(f"{self.name}: the agent did not stop talking within {timeout}s")

    async def speak(self, pcm: bytes, sample_rate: int, *, trailing_silence: float = 1.0) -> float:
        """Publish speech in real time; returns the monotonic time the speech ended."""
        if self._source is None:
            await self.open_microphone()
        assert self._source is not None
        samples = np.frombuffer(pcm, dtype=np.int16)
        if sample_rate != SAMPLE_RATE:
            positions = np.arange(0, samples.size, sample_rate / SAMPLE_RATE)
            samples = np.interp(positions, np.arange(samples.size), samples).astype(np.int16)
        per_frame = SAMPLE_RATE * FRAME_MS // 1000
        await self._push(samples, per_frame)
        await self._source.wait_for_playout()
        ended = time.monotonic()
        await self._push(np.zeros(int(SAMPLE_RATE * trailing_silence), dtype=np.int16), per_frame)
        return ended

    async def speak_parts(
        self, parts: tuple[np.ndarray, ...], pauses: tuple[float, ...], *, trailing_silence: float = 1.0
    ) -> list[tuple[float, float]]:
        """Publish 48 kHz speech parts with silences between them, in real time; returns
        each part's (start, end) monotonic times."""
        if self._source is None:
            await self.open_microphone()
        assert self._source is not None
        per_frame = SAMPLE_RATE * FRAME_MS // 1000
        times: list[tuple[float, float]] = []
        for i, part in enumerate(parts):
            await self._source.wait_for_playout()
            started = time.monotonic()
            await self._push(part, per_frame)
            await self._source.wait_for_playout()
            times.append((started, time.monotonic()))
            if i < len(pauses):
                await self._push(np.zeros(int(SAMPLE_RATE * pauses[i]), dtype=np.int16), per_frame)
        await self._push(np.zeros(int(SAMPLE_RATE * trailing_silence), dtype=np.int16), per_frame)
        return times

    async def open_microphone(self, *, timeout: float = 20.0) -> None:
        """Publish the microphone, sending silence until someone (the agent) has subscribed.

        A browser opens its microphone on joining, long before the visitor speaks. Speech
        pushed into a track nobody receives yet is lost: a visitor that published and spoke
        at once lost its first syllables whenever the agent's subscription was slow.
        """
        self._source = rtc.AudioSource(SAMPLE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await self.room.local_participant.publish_track(track, options)
        subscribed = asyncio.ensure_future(publication.wait_for_subscription())
        per_frame = SAMPLE_RATE * FRAME_MS // 1000
        silence = np.zeros(per_frame * 10, dtype=np.int16)
        deadline = time.monotonic() + timeout
        try:
            while not subscribed.done():
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"nobody subscribed to {self.name}'s microphone within {timeout:.0f} s"
                    )
                await self._push(silence, per_frame)
        finally:
            subscribed.cancel()
        # the subscriber's receiving side is set up just after it is reported subscribed
        await self._push(np.zeros(SAMPLE_RATE * 3 // 10, dtype=np.int16), per_frame)
        await self._source.wait_for_playout()

    async def _push(self, samples: np.ndarray, per_frame: int) -> None:
        assert self._source is not None
        for start in range(0, samples.size, per_frame):
            chunk = samples[start : start + per_frame]
            if chunk.size < per_frame:
                chunk = np.pad(chunk, (0, per_frame - chunk.size))
            frame = rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, per_frame)
            await self._source.capture_frame(frame)

    async def leave(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.room.disconnect()
