"""The captions' speaking-rate detector: livekit-agents' figures, at a fraction of the cost."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice import io
from livekit.agents.voice.transcription import TranscriptSynchronizer, synchronizer
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateDetector, SpeakingRateEvent

from voiceagents.providers.offline_tts import synthesize_samples
from voiceagents.worker import captions


def _rates(detector: SpeakingRateDetector, frames: list[rtc.AudioFrame]) -> list[SpeakingRateEvent]:
    return _run_stream(detector, frames)[0]


def _run_stream(
    detector: SpeakingRateDetector, frames: list[rtc.AudioFrame]
) -> tuple[list[SpeakingRateEvent], Any]:
    async def body() -> tuple[list[SpeakingRateEvent], Any]:
        stream = detector.stream()
        for frame in frames:
            stream.push_frame(frame)
        stream.end_input()
        return [ev async for ev in stream], stream

    return asyncio.run(asyncio.wait_for(body(), 30))


def _reply_frames(sample_rate: int) -> list[rtc.AudioFrame]:
    """A reply as a TTS hands it over: seconds of speech in 20 ms frames, with a pause."""
    speech = synthesize_samples(
        "Sure, I can help with that. What else would you like to know?", sample_rate=sample_rate
    )
    pause = np.zeros(sample_rate // 2, dtype=np.int16)
    audio = np.concatenate([speech, pause, speech[: len(speech) // 3]])
    step = sample_rate // 50
    return [
        rtc.AudioFrame(audio[i : i + step].tobytes(), sample_rate, 1, len(audio[i : i + step]))
        for i in range(0, len(audio), step)
    ]


@pytest.mark.parametrize("sample_rate", [24000, 22050, 16000])
def test_fast_detector_gives_livekit_agents_own_figures(sample_rate: int) -> None:
    frames = _reply_frames(sample_rate)

    theirs = _rates(SpeakingRateDetector(), frames)
    ours = _rates(captions.FastSpeakingRateDetector(), frames)

    assert len(theirs) == len(ours) > 20
    assert [e.timestamp for e in ours] == [e.timestamp for e in theirs]
    assert [e.speaking for e in ours] == [e.speaking for e in theirs]
    assert any(e.speaking for e in ours) and not all(e.speaking for e in ours)  # the pause
    np.testing.assert_allclose([e.speaking_rate for e in ours], [e.speaking_rate for e in theirs], rtol=1e-9)


def test_fast_detector_transforms_each_frame_once_across_sliding_windows() -> None:
    """The 1 s window slides by 0.1 s: after the first window only the new 0.1 s is
    transformed, so a reply costs about one FFT per 12.5 ms of audio, not ten."""
    sample_rate = 24000
    frames = _reply_frames(sample_rate)
    events, stream = _run_stream(captions.FastSpeakingRateDetector(), frames)

    windows = len(events) - 1  # the last event is the flush's partial window
    per_window = (sample_rate - 600) // 300 + 1  # 25 ms frames, 12.5 ms apart, in 1 s
    assert windows > 20
    # silent windows skip the flux, and a window after one of them starts afresh; without
    # the reuse it would be per_window for every window with sound (most of them)
    assert stream.frames_transformed < per_window * windows / 4, (stream.frames_transformed, windows)


def test_fast_detector_lets_the_event_loop_run_while_it_digests_a_whole_reply() -> None:
    """A reply pushed at once must not hold the loop until its last window is estimated:
    the reply's first frame is waiting for a callback of its own on the same loop."""
    frames = _reply_frames(24000)

    async def body() -> tuple[int, int]:
        stream = captions.FastSpeakingRateDetector().stream()
        events: list[SpeakingRateEvent] = []
        seen_by_callback: list[int] = []

        async def read() -> None:
            async for ev in stream:
                events.append(ev)

        reader = asyncio.create_task(read())
        for frame in frames:
            stream.push_frame(frame)
        stream.end_input()
        # as the room output's flush timer is armed for the first frame
        asyncio.get_running_loop().call_later(0, lambda: seen_by_callback.append(len(events)))
        await asyncio.wait_for(reader, 30)
        return seen_by_callback[0], len(events)

    at_callback, total = asyncio.run(body())
    assert total > 20
    assert at_callback <= 2, (at_callback, total)


class _NullAudioOutput(io.AudioOutput):
    def __init__(self) -> None:
        super().__init__(
            label="null",
            next_in_chain=None,
            sample_rate=24000,
            capabilities=io.AudioOutputCapabilities(pause=False),
        )

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)

    def flush(self) -> None:
        super().flush()

    def clear_buffer(self) -> None:
        pass


def test_install_makes_the_transcript_synchronizer_use_the_fast_detector() -> None:
    """Fails if a livekit-agents upgrade stops building the detector from this name."""
    original = synchronizer.SpeakingRateDetector

    async def built_detector() -> SpeakingRateDetector:
        sync = TranscriptSynchronizer(next_in_chain_audio=_NullAudioOutput(), next_in_chain_text=None)
        try:
            return sync._opts.speaking_rate_detector
        finally:
            await sync.aclose()

    try:
        synchronizer.SpeakingRateDetector = SpeakingRateDetector
        assert not isinstance(asyncio.run(built_detector()), captions.FastSpeakingRateDetector)
        captions.install()
        assert isinstance(asyncio.run(built_detector()), captions.FastSpeakingRateDetector)
    finally:
        synchronizer.SpeakingRateDetector = original
