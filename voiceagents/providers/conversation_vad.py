"""One VAD inference per conversation, heard by both the session and the STT adapter.

A non-streaming STT (openai, groq, local) needs a VAD to cut the audio into
utterances, and the session needs one for turns and barge-in. Given one VAD,
livekit-agents opens two streams on it, one per purpose, and each runs the
model on every window of the same audio: half of that work is redundant.

``ConversationVAD`` is built per conversation. The session uses it as its VAD:
its stream runs the model. ``listener()`` is the STT adapter's VAD: its streams
run nothing and hand on the session stream's events. On END_OF_SPEECH a
listener swaps in the frames it was pushed itself for that stretch of input, so
the STT transcribes its own audio (the framework gives the STT silence, and the
VAD the real frames, while an uninterruptible reply plays).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import weakref

from livekit import rtc
from livekit.agents import utils, vad

# input kept by a listener outside speech: the VAD's prefix padding and the time its
# events trail the audio, with room to spare
_KEEP_OUTSIDE_SPEECH_SECONDS = 2.0
# and inside speech at most this much (the VAD's own max_buffered_speech is 60 s)
_KEEP_MAX_SECONDS = 65.0
# how long an END_OF_SPEECH waits for this stream's own input to catch up with the source's
_CATCH_UP_SECONDS = 0.5


class ConversationVAD(vad.VAD):
    """``inner`` for the session; ``listener()`` shares its inference."""

    def __init__(self, inner: vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self._listeners: weakref.WeakSet[_ListenerStream] = weakref.WeakSet()
        self._listener_vad = _ListenerVAD(self)

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    def listener(self) -> vad.VAD:
        return self._listener_vad

    def stream(self) -> vad.VADStream:
        return _SourceStream(self, self.inner.stream())

    def _publish(self, event: vad.VADEvent) -> None:
        for listener in list(self._listeners):
            listener._hear(event)


class _SourceStream(vad.VADStream):
    """The session's stream: runs the model and passes every event to the listeners too."""

    def __init__(self, owner: ConversationVAD, inner: vad.VADStream) -> None:
        self._owner = owner
        self._inner = inner
        super().__init__(owner)

    async def _forward_input(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, vad.VADStream._FlushSentinel):
                self._inner.flush()
            else:
                self._inner.push_frame(item)
        self._inner.end_input()

    async def _main_task(self) -> None:
        forward = asyncio.create_task(self._forward_input())
        try:
            async for event in self._inner:
                self._owner._publish(event)
                self._event_ch.send_nowait(event)
        finally:
            await utils.aio.cancel_and_wait(forward)
            await self._inner.aclose()


class _ListenerVAD(vad.VAD):
    def __init__(self, owner: ConversationVAD) -> None:
        super().__init__(capabilities=owner.capabilities)
        self._owner = owner

    @property
    def model(self) -> str:
        return self._owner.model

    @property
    def provider(self) -> str:
        return self._owner.provider

    def stream(self) -> vad.VADStream:
        stream = _ListenerStream(self)
        self._owner._listeners.add(stream)
        return stream


class _ListenerStream(vad.VADStream):
    """Runs no model: the source stream's events, with END_OF_SPEECH carrying this stream's audio."""

    def __init__(self, owner: _ListenerVAD) -> None:
        # (input seconds at the frame's start, frame) pushed to this stream
        self._frames: collections.deque[tuple[float, rtc.AudioFrame]] = collections.deque()
        self._pushed = 0.0
        self._speaking = False
        self._heard: asyncio.Queue[vad.VADEvent | None] = asyncio.Queue()
        self._took = asyncio.Event()  # set whenever input is taken, and when it ends
        self._input_ended = False
        super().__init__(owner)

    def _hear(self, event: vad.VADEvent) -> None:
        self._heard.put_nowait(event)

    async def _take_input(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, vad.VADStream._FlushSentinel):
                continue  # the source stream decides when the model's state resets
            self._frames.append((self._pushed, item))
            self._pushed += item.duration
            self._trim(self._pushed, _KEEP_MAX_SECONDS)  # bounded even if the source stalls
            self._took.set()
        self._input_ended = True
        self._took.set()
        self._heard.put_nowait(None)

    async def _caught_up(self, position: float) -> None:
        """Until this stream was pushed the input up to ``position`` (the same audio reaches
        both streams in one callback, but their tasks take it in turn), or it ends."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CATCH_UP_SECONDS):
                while self._pushed < position - 1e-3 and not self._input_ended:
                    self._took.clear()
                    await self._took.wait()

    def _trim(self, position: float, keep: float) -> None:
        """Forget frames that ended ``keep`` seconds before input second ``position``."""
        while self._frames and self._frames[0][0] + self._frames[0][1].duration < position - keep:
            self._frames.popleft()

    def _own_frames(self, event: vad.VADEvent) -> list[rtc.AudioFrame]:
        """This stream's frames covering the event's stretch of input (same audio, same positions)."""
        span = sum(f.duration for f in event.frames)
        start, end = event.timestamp - span, event.timestamp
        own = [f for at, f in self._frames if at + f.duration > start and at < end]
        return own or event.frames

    async def _main_task(self) -> None:
        take = asyncio.create_task(self._take_input())
        try:
            while (event := await self._heard.get()) is not None:
                if event.type == vad.VADEventType.START_OF_SPEECH:
                    self._speaking = True
                elif event.type == vad.VADEventType.END_OF_SPEECH:
                    self._speaking = False
                    if event.frames:
                        await self._caught_up(event.timestamp)
                        event = dataclasses.replace(event, frames=self._own_frames(event))
                # the source's events trail the audio: trim by how far it has heard
                self._trim(
                    event.timestamp, _KEEP_MAX_SECONDS if self._speaking else _KEEP_OUTSIDE_SPEECH_SECONDS
                )
                self._event_ch.send_nowait(event)
        finally:
            await utils.aio.cancel_and_wait(take)
