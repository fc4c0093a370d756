"""A VAD whose end of speech is the last audible sound, not the model's late guess.

The endpointing delay (``AGENT_ENDPOINTING_DELAY_SECONDS``) counts from the moment
livekit-agents believes the visitor stopped speaking: the time of silero's
END_OF_SPEECH event minus the silence it reports. silero's smoothed probability stays
high for a while after the last word (on espeak speech its raw probability is 1.0 until
50 ms past the last sample, and the smoothing, the 32 ms window and the input frame add
to that), so that moment is ~100-150 ms late, and every turn waited that much longer
than configured.

``SpeechEndVAD`` wraps silero and passes its events through unchanged, except one: at
END_OF_SPEECH it looks at the utterance's own audio (the event carries it), finds the
last 10 ms block that is within ``QUIET_BELOW_SPEECH_DB`` of the utterance's speech
level, and reports the silence as starting when that block reached the agent: it
remembers when each frame was pushed, and a frame's samples arrived in real time
before its push. That also takes out the time the audio spent in
the VAD's own pipeline (filling a 32 ms window, inference, a busy event loop), which
the framework would otherwise count as silence already waited through. Silero still
decides *whether* the visitor stopped; this only dates *when*. The date moves earlier
by at most ``MAX_BACKDATE_SECONDS``, never later, and where the background is as loud
as the threshold (a noisy room) nothing moves.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import time

import numpy as np
from livekit import rtc
from livekit.agents import utils, vad

# a block this far below the utterance's speech level (its 90th-percentile block) is quiet
QUIET_BELOW_SPEECH_DB = 35.0
# never quieter than this counts as sound (int16 RMS, about -60 dBFS)
MIN_SOUND_RMS = 32.0
# the end moves at most this much before silero's own
MAX_BACKDATE_SECONDS = 1.0
# frames whose arrival is remembered: a minute of 10 ms frames, longer than any utterance
_ARRIVALS_KEPT = 6000
_BLOCK_SECONDS = 0.01


def trailing_quiet(frame: rtc.AudioFrame) -> float:
    """Seconds of quiet at the end of ``frame``, a mono s16 utterance with its silence."""
    block = max(1, int(frame.sample_rate * _BLOCK_SECONDS))
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        samples = samples[: len(samples) - len(samples) % frame.num_channels]
        samples = samples.reshape(-1, frame.num_channels).mean(axis=1)
    n_blocks = len(samples) // block
    if n_blocks == 0:
        return 0.0
    # blocks counted back from the end, so the last block ends at the last sample
    tail = samples[len(samples) - n_blocks * block :].astype(np.float64).reshape(n_blocks, block)
    rms = np.sqrt(np.mean(tail * tail, axis=1))
    level = float(np.percentile(rms, 90))
    threshold = max(level * 10 ** (-QUIET_BELOW_SPEECH_DB / 20), MIN_SOUND_RMS)
    loud = np.flatnonzero(rms >= threshold)
    if loud.size == 0:
        return 0.0
    return (n_blocks - 1 - int(loud[-1])) * block / frame.sample_rate


class Arrivals:
    """When each stretch of a VAD stream's input was pushed, by seconds of input."""

    def __init__(self, kept: int = _ARRIVALS_KEPT) -> None:
        self._starts: collections.deque[float] = collections.deque(maxlen=kept)  # input seconds
        self._times: collections.deque[float] = collections.deque(maxlen=kept)  # wall clock
        self._pushed = 0.0

    def add(self, duration: float, at: float) -> None:
        self._starts.append(self._pushed)
        self._times.append(at)
        self._pushed += duration

    def reset(self) -> None:
        """The VAD flushed: its input seconds count from zero again."""
        self._starts.clear()
        self._times.clear()
        self._pushed = 0.0

    def heard_at(self, position: float) -> float | None:
        """Wall-clock time input second ``position`` reached the agent, if remembered.

        A frame is pushed when its last sample has arrived; the room fills it in real time,
        so a moment ``x`` seconds before the frame's end arrived ``x`` seconds before the
        push (a 20 ms frame would otherwise date a sound at its start up to 20 ms late)."""
        i = bisect.bisect_right(self._starts, position - 1e-9) - 1
        if i < 0:
            return None
        end = self._starts[i + 1] if i + 1 < len(self._starts) else self._pushed
        return self._times[i] - min(max(end - position, 0.0), end - self._starts[i])


def backdated(
    event: vad.VADEvent, max_backdate: float = MAX_BACKDATE_SECONDS, *, arrivals: Arrivals | None = None
) -> vad.VADEvent:
    """``event`` (an END_OF_SPEECH) with its silence counted from the last audible block:
    from the moment that block reached the agent when ``arrivals`` knows, else by its
    place in the audio. Handed on at once, so the framework's clock reads the same ``now``."""
    if event.type != vad.VADEventType.END_OF_SPEECH or not event.frames:
        return event
    audio = event.frames[0] if len(event.frames) == 1 else rtc.combine_audio_frames(event.frames)
    in_audio = trailing_quiet(audio)
    quiet = in_audio
    if arrivals is not None:
        # silero's timestamp is the input seconds it has consumed, up to this event's
        # window; the last audible block ends where the quiet begins
        heard_at = arrivals.heard_at(event.timestamp - in_audio)
        if heard_at is not None:
            quiet = max(quiet, time.time() - heard_at)
    quiet = min(quiet, event.silence_duration + max_backdate)
    if quiet <= event.silence_duration:
        return event
    moved = quiet - event.silence_duration
    return dataclasses.replace(
        event, silence_duration=quiet, speech_duration=max(0.0, event.speech_duration - moved)
    )


class SpeechEndVAD(vad.VAD):
    """``inner`` (silero) with END_OF_SPEECH dated at the last audible sound."""

    def __init__(self, inner: vad.VAD, *, max_backdate: float = MAX_BACKDATE_SECONDS) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self.max_backdate = max_backdate

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    def stream(self) -> vad.VADStream:
        return _SpeechEndStream(self, self.inner.stream())


class _SpeechEndStream(vad.VADStream):
    def __init__(self, owner: SpeechEndVAD, inner: vad.VADStream) -> None:
        self._inner = inner
        self._max_backdate = owner.max_backdate
        self._arrivals = Arrivals()
        # push times of frames not yet handed to the inner stream, in push order
        self._push_times: collections.deque[float] = collections.deque()
        super().__init__(owner)

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        super().push_frame(frame)
        self._push_times.append(time.time())

    async def _forward_input(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, vad.VADStream._FlushSentinel):
                self._arrivals.reset()
                self._inner.flush()
            else:
                self._arrivals.add(item.duration, self._push_times.popleft())
                self._inner.push_frame(item)
        self._inner.end_input()

    async def _main_task(self) -> None:
        forward = asyncio.create_task(self._forward_input())
        try:
            async for event in self._inner:
                self._event_ch.send_nowait(backdated(event, self._max_backdate, arrivals=self._arrivals))
        finally:
            await utils.aio.cancel_and_wait(forward)
            await self._inner.aclose()
