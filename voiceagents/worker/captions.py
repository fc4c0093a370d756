"""Captions in step with the voice, without stalling the reply's first audio.

With ``AGENT_SYNC_TRANSCRIPTION`` on (the default), livekit-agents' ``TranscriptSynchronizer``
releases the agent's words to the room (the widget's captions, and the transcript of an
interrupted reply) as they are heard. To pace them it estimates the voice's speaking rate:
a spectral flux over a 1 s window every 0.1 s (``voice/transcription/_speaking_rate.py``),
computed on the event loop with a Python loop of one FFT per 25 ms frame. With
preemptive TTS the whole reply is synthesized before the turn ends and reaches the
synchronizer at once, so the estimate works through all of it in one go: ~100 ms for
3.6 s of speech, during which the reply's first frame waits to be sent.

``FastSpeakingRateDetector`` computes the same spectral flux with the frames' FFTs in
one numpy call: the same figures (see the test) at about a tenth of the cost.
``install()`` makes the synchronizer use it. livekit-agents builds its detector from a
module-level name with no option to pass one, so that name is what ``install()``
replaces; ``test_captions`` fails if a livekit-agents upgrade moves it.
"""

from __future__ import annotations

import functools

import numpy as np
from livekit.agents.voice.transcription import synchronizer
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateDetector, SpeakingRateStream


@functools.lru_cache(maxsize=8)
def _window(frame_length: int) -> tuple[np.ndarray, float]:
    window = np.hanning(frame_length)
    return window, 1.0 / float(np.sqrt(np.sum(window**2)))


class _FastSpeakingRateStream(SpeakingRateStream):
    def _spectral_flux(self, audio: np.ndarray, sample_rate: int) -> float:  # type: ignore[override]
        # the parameters of SpeakingRateStream._spectral_flux: 25 ms frames, 50 % overlap
        frame_length = int(sample_rate * 0.025)
        hop_length = frame_length // 2
        if frame_length <= 0 or len(audio) < frame_length:
            return 0.0
        num_frames = (len(audio) - frame_length) // hop_length + 1
        window, scale = _window(frame_length)
        frames = np.lib.stride_tricks.sliding_window_view(audio, frame_length)[::hop_length][:num_frames]
        magnitudes = np.abs(np.fft.rfft(frames * window, axis=1) * scale)
        flux = np.abs(np.diff(magnitudes, axis=0)).sum(axis=1)
        return float(np.mean(flux)) if flux.size else 0.0


class FastSpeakingRateDetector(SpeakingRateDetector):
    """livekit-agents' speaking-rate detector, its spectral flux computed in one FFT call."""

    def stream(self) -> SpeakingRateStream:
        return _FastSpeakingRateStream(self, self._opts)


def install() -> None:
    """Make every TranscriptSynchronizer built from now on use FastSpeakingRateDetector."""
    synchronizer.SpeakingRateDetector = FastSpeakingRateDetector  # type: ignore[misc]
