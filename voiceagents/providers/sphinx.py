"""The pocketsphinx decoder behind the offline STT: plain blocking functions.

Imports numpy and pocketsphinx only, so a process that just decodes (the offline
STT's decoding subprocess, offline_stt.py) starts quickly. A decoder is not
thread-safe and costs ~0.5 s and ~100 MB to load, so the process keeps one,
loaded on first use, and decodes under a lock.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pocketsphinx import Decoder  # type: ignore[import-untyped]

DECODER_SAMPLE_RATE = 16000
# pocketsphinx's default frame rate: segment boundaries are counted in 10 ms frames
_FRAMES_PER_SECOND = 100
# fillers and sentence markers are not words a caller said
_NON_WORDS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "++NOISE++", "++BREATH++"}
# cmudict marks alternate pronunciations as word(2)
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")
# Gaussian noise (about -55 dBFS) mixed into every utterance before decoding. Synthetic
# speech (espeak, a stub's TTS) has stretches of exact digital zero between words, which
# no microphone produces; on them pocketsphinx's features degenerate and it gets about a
# third of the words right. With this floor it gets about 80 % (see test_providers).
_DITHER_RMS = 60.0


@dataclass(frozen=True)
class RecognizedWord:
    word: str
    start: float
    end: float
    confidence: float


def resample_pcm16(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono int16 samples by FFT (an ideal low-pass, so no aliasing).

    Pure numpy so it is safe in any thread; utterances are seconds long, so one FFT is
    cheap and needs no streaming state.
    """
    if src_rate == dst_rate or len(samples) == 0:
        return samples.astype(np.int16, copy=False)
    n_out = max(1, int(round(len(samples) * dst_rate / src_rate)))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    n_bins = n_out // 2 + 1
    if n_bins <= len(spectrum):
        spectrum = spectrum[:n_bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(n_bins - len(spectrum), dtype=complex)])
    out = np.fft.irfft(spectrum, n=n_out) * (n_out / len(samples))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def pcm16_to_mono(data: bytes | np.ndarray, num_channels: int) -> np.ndarray:
    samples = np.frombuffer(data, dtype=np.int16) if isinstance(data, bytes) else data
    if num_channels <= 1:
        return samples.astype(np.int16, copy=False)
    frames = samples[: len(samples) - len(samples) % num_channels].reshape(-1, num_channels)
    return frames.astype(np.int32).mean(axis=1).astype(np.int16)


_LOCK = threading.Lock()
_DECODERS: dict[str, Decoder] = {}
# Decoder settings over the bundled en-us acoustic model, LM and dictionary, by name
# (bench/bench_offline_stt.py measures each). The STT uses pocketsphinx's own defaults:
# "tuned" (no second pass, a lower word insertion penalty) decodes faster with a lower
# word error rate on the benchmark's set, but misheard "hello world" in a quarter of
# espeak-ng's renderings, where the defaults never did.
DECODER_CONFIGS: dict[str, dict[str, object]] = {
    "pocketsphinx": {},  # the library's own defaults
    "tuned": {"fwdflat": False, "wip": 0.2},
    "fast": {"fwdflat": False, "bestpath": False},
}
DEFAULT_CONFIG = "pocketsphinx"


def _decoder(config: str = DEFAULT_CONFIG) -> Decoder:
    decoder = _DECODERS.get(config)
    if decoder is None:
        from pocketsphinx import Decoder

        decoder = _DECODERS[config] = Decoder(loglevel="ERROR", **DECODER_CONFIGS[config])
    return decoder


def load_decoder() -> None:
    """Load the process's decoder now (e.g. in a worker's prewarm) instead of on first use."""
    with _LOCK:
        _decoder()


def transcribe_words(
    pcm: bytes | np.ndarray, sample_rate: int, num_channels: int = 1, *, config: str = DEFAULT_CONFIG
) -> list[RecognizedWord]:
    """Decode one utterance of s16le PCM; return its words with times. Blocking, thread-safe."""
    samples = resample_pcm16(pcm16_to_mono(pcm, num_channels), sample_rate, DECODER_SAMPLE_RATE)
    if len(samples) == 0:
        return []
    # seeded, so one utterance always decodes to the same words
    noise = np.random.default_rng(0).normal(0.0, _DITHER_RMS, len(samples))
    samples = np.clip(samples + noise, -32768, 32767).astype(np.int16)
    with _LOCK:
        decoder = _decoder(config)
        decoder.start_utt()
        # full_utt lets pocketsphinx normalise over the whole utterance (batch CMN)
        decoder.process_raw(samples.tobytes(), full_utt=True)
        decoder.end_utt()
        # the python binding already turns segment posteriors into linear probabilities
        words = [
            RecognizedWord(
                word=_ALT_PRONUNCIATION.sub("", seg.word),
                start=seg.start_frame / _FRAMES_PER_SECOND,
                end=(seg.end_frame + 1) / _FRAMES_PER_SECOND,
                confidence=float(min(1.0, max(0.0, seg.prob))),
            )
            for seg in decoder.seg()
            if seg.word not in _NON_WORDS
        ]
    return words


def transcribe_pcm(
    pcm: bytes | np.ndarray, sample_rate: int, num_channels: int = 1, *, config: str = DEFAULT_CONFIG
) -> str:
    """Decode one utterance of s16le PCM to lower-case text ("" for silence). Blocking."""
    return " ".join(w.word for w in transcribe_words(pcm, sample_rate, num_channels, config=config))
