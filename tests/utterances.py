"""Visitor utterances for turn-taking tests and benchmarks, spoken by espeak-ng.

A pause inside a sentence ("I'd like to book a table and ... for two") must sound
unfinished before it: synthesized as a sentence of its own, the words before the
pause end with espeak's falling, final intonation. So the whole sentence is
synthesized at once with an SSML break where the pause goes, and cut there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voiceagents.providers.offline_tts import synthesize_samples

SAMPLE_RATE = 48000
_BLOCK = SAMPLE_RATE // 100  # 10 ms
_QUIET_RMS = 100.0
_BREAK_MS = 600


@dataclass(frozen=True)
class Utterance:
    """Speech in parts; between two parts, a pause of the given seconds."""

    kind: str  # complete, question, short, paused
    text: str
    voice: str
    parts: tuple[np.ndarray, ...]
    pauses: tuple[float, ...] = ()


def speak(text: str, *, voice: str = "en-us") -> np.ndarray:
    return synthesize_samples(text, voice=voice, sample_rate=SAMPLE_RATE)


def speak_with_pause(before: str, after: str, pause: float, *, voice: str = "en-us") -> Utterance:
    """``before``, ``pause`` seconds of silence, then ``after``, in one intonation."""
    samples = synthesize_samples(
        f'<speak>{before} <break time="{_BREAK_MS}ms"/> {after}</speak>',
        voice=voice,
        sample_rate=SAMPLE_RATE,
        ssml=True,
    )
    start, end = _longest_gap(samples)
    return Utterance(
        kind="paused",
        text=f"{before} … {after}",
        voice=voice,
        parts=(samples[:start], samples[end:]),
        pauses=(pause,),
    )


def _longest_gap(samples: np.ndarray) -> tuple[int, int]:
    """(first, last+1) sample of the longest quiet stretch between two sounds."""
    n = samples.size // _BLOCK
    rms = np.sqrt(np.mean(samples[: n * _BLOCK].astype(np.float64).reshape(n, _BLOCK) ** 2, axis=1))
    loud = np.flatnonzero(rms >= _QUIET_RMS)
    if loud.size < 2:
        raise ValueError("no pause found in the synthesized sentence")
    gaps = np.diff(loud)
    i = int(np.argmax(gaps))
    return int(loud[i] + 1) * _BLOCK, int(loud[i + 1]) * _BLOCK
