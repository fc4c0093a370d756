"""The captions' speaking-rate detector: livekit-agents' figures, at a fraction of the cost."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice import io
from livekit.agents.voice.transcription import TranscriptSynchronizer, synchronizer
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateDetector, SpeakingRateEvent

from voiceagents.providers.offline_tts import synthesize_samples
from voiceagents.worker import captions


def _rates(detector: SpeakingRateDetector, frames: list[rtc.AudioFrame]) -> list[SpeakingRateEvent]:
    async def body() -> list[SpeakingRateEvent]:
        stream = detector.stream()
        for frame in frames:
            stream.push_frame(frame)
        stream.end_input()
        return [ev async for ev in stream]

    return asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.parametrize("sample_rate", [24000, 22050, 16000])
def test_fast_detector_gives_livekit_agents_own_figures(sample_rate: int) -> None:
    # a reply as a TTS hands it over: several seconds of speech in 20 ms frames, with pauses
    speech = synthesize_samples("Sure, I can help with that. What else would you like to know?", sample_rate=sample_rate)
    pause = np.zeros(sample_rate // 2, dtype=np.int16)
    audio = np.concatenate([speech, pause, speech[: len(speech) // 3]])
    step = sample_rate // 50
    frames = [
        rtc.AudioFrame(audio[i : i + step].tobytes(), sample_rate, 1, len(audio[i : i + step]))
        for i in range(0, len(audio), step)
    ]

    theirs = _rates(SpeakingRateDetector(), frames)
    ours = _rates(captions.FastSpeakingRateDetector(), frames)

    assert len(theirs) == len(ours) > 20
    assert [e.timestamp for e in ours] == [e.timestamp for e in theirs]
    assert [e.speaking for e in ours] == [e.speaking for e in theirs]
    assert any(e.speaking for e in ours) and not all(e.speaking for e in ours)  # the pause
    np.testing.assert_allclose([e.speaking_rate for e in ours], [e.speaking_rate for e in theirs], rtol=1e-9)


class _NullAudioOutput(io.AudioOutput):
    def __init__(self) -> None:
        super().__init__(label="null", next_in_chain=None, sample_rate=24000, capabilities=io.AudioOutputCapabilities(pause=False))

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
        synchronizer.SpeakingRateDetector = SpeakingRateDetector  # type: ignore[misc]
        assert not isinstance(asyncio.run(built_detector()), captions.FastSpeakingRateDetector)
        captions.install()
        assert isinstance(asyncio.run(built_detector()), captions.FastSpeakingRateDetector)
    finally:
        synchronizer.SpeakingRateDetector = original  # type: ignore[misc]
