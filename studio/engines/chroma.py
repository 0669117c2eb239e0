"""MusicGen Melody's melody conditioning: the chromagram of a reference clip, computed as
transformers' `MusicgenMelodyFeatureExtractor` computes it, without torchaudio.

That extractor needs torchaudio for two things only, its resampler and its spectrogram, and
torchaudio has no CPU wheel here. Both are short, documented computations, done here with torch:

1. mono at the extractor's rate (32 kHz): band-limited sinc interpolation with a Hann window, as
   `torchaudio.functional.resample(wave, rate, 32000, rolloff=0.945, lowpass_filter_width=24)`;
2. at most `chunk_length` seconds (30 s); a clip shorter than `n_fft` zero-padded to it, centred;
3. the power spectrogram: `torch.stft` with n_fft 16384, a periodic Hann window as long, hop 4096,
   centred with reflection, divided by the window's L2 norm (torchaudio's `normalized=True`), squared;
4. projected onto 12 pitch classes with transformers' own `chroma_filter_bank` (librosa's
   filters, starting at C, tuning 0): the very matrix the extractor uses;
5. each frame divided by its largest value (eps 1e-6), then one-hot at its strongest pitch class.

So a clip gives 1 + samples // 4096 frames of 12 values, exactly one of them 1. The numbers come
from the checkpoint's `preprocessor_config.json`, so a model with other settings is followed.
`tests/test_musicgen_melody.py` compares the result with the extractor's own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

# torchaudio.functional.resample's settings in the extractor (its defaults are 6 and 0.99).
LOWPASS_FILTER_WIDTH = 24
ROLLOFF = 0.945


def resample(wave: torch.Tensor, rate: int, new_rate: int, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
             rolloff: float = ROLLOFF) -> torch.Tensor:
    """`wave` (..., samples), a float tensor sampled at `rate`, at `new_rate`: band-limited sinc
    interpolation, the sinc cut after `lowpass_filter_width` zero crossings under a Hann window.

    With both rates divided by their gcd (`down` in, `up` out), output sample j = q * up + p lies at
    input time (q * down + p * down / up); it is the same filter for every q, so output phase p is
    one FIR filter run with stride `down`. The anti-aliasing cut-off is `rolloff` times the lower
    Nyquist frequency; the output has ceil(samples * up / down) samples. Computed in `wave`'s dtype."""
    if rate <= 0 or new_rate <= 0 or int(rate) != rate or int(new_rate) != new_rate:
        raise ValueError(f"sample rates must be positive whole numbers, got {rate} and {new_rate}")
    if rate == new_rate:
        return wave
    common = math.gcd(int(rate), int(new_rate))
    down, up = int(rate) // common, int(new_rate) // common
    cutoff = min(down, up) * rolloff  # in cycles per `down` input samples
    half = math.ceil(lowpass_filter_width * down / cutoff)  # taps each side of the output time, in input samples
    dtype, device = wave.dtype, wave.device
    # Tap offsets k (input sample q*down + k) and phases p, in units of the reduced input rate:
    # x = (k / down - p / up) * cutoff is the distance in sinc zero crossings.
    taps = torch.arange(-half, half + down, dtype=dtype, device=device)[None, None] / down
    phases = torch.arange(0, -up, -1, dtype=dtype, device=device)[:, None, None] / up
    x = ((phases + taps) * cutoff).clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(x * math.pi / lowpass_filter_width / 2) ** 2
    x = x * math.pi
    kernel = torch.where(x == 0, torch.tensor(1.0, dtype=dtype, device=device), x.sin() / x)
    kernel = kernel * (window * (cutoff / down))  # (up, 1, taps)

    shape = wave.shape
    flat = wave.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (half, half + down))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=down)  # (n, up, blocks)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :math.ceil(up * length / down)]
    return out.reshape(*shape[:-1], out.shape[-1])


@dataclass(frozen=True)
class MelodyChroma:
    """The chroma settings of a MusicGen Melody checkpoint (its `preprocessor_config.json`)."""

    sampling_rate: int = 32000
    n_fft: int = 16384
    hop_length: int = 4096
    chunk_length: int = 30  # seconds of the clip that count; the rest is cut
    num_chroma: int = 12

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MelodyChroma":
        """From a feature extractor's saved settings; a missing key takes the extractor's default."""
        defaults = cls()
        values = {}
        for name in ("sampling_rate", "n_fft", "hop_length", "chunk_length", "num_chroma"):
            value = config.get(name, getattr(defaults, name))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
                raise ValueError(f"preprocessor_config.json: {name} must be a positive whole number, got {value!r}")
            values[name] = int(value)
        return cls(**values)

    @property
    def max_samples(self) -> int:
        return self.chunk_length * self.sampling_rate

    def frames(self, samples: int) -> int:
        """How many chroma frames a clip of `samples` samples (at `sampling_rate`) gives."""
        samples = max(min(samples, self.max_samples), self.n_fft)
        return 1 + samples // self.hop_length

    def filters(self) -> torch.Tensor:
        """(num_chroma, n_fft // 2 + 1): transformers' chroma filter bank, as the extractor builds it."""
        from transformers.audio_utils import chroma_filter_bank

        bank = chroma_filter_bank(sampling_rate=self.sampling_rate, num_frequency_bins=self.n_fft, tuning=0,
                                  num_chroma=self.num_chroma)
        return torch.from_numpy(bank).float()

    def power_spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """(n_fft // 2 + 1, frames) of a 1-D float32 waveform: |STFT|^2 over the window's energy."""
        window = torch.hann_window(self.n_fft, dtype=wave.dtype, device=wave.device)
        spec = torch.stft(wave, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.n_fft, window=window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        spec = spec / window.pow(2.0).sum().sqrt()
        return spec.abs().pow(2.0)

    def prepare(self, wave: np.ndarray | torch.Tensor, rate: int) -> torch.Tensor:
        """The mono waveform the spectrogram is taken of: float32 at `sampling_rate`, cut to
        `chunk_length` seconds, and a clip shorter than one window padded to it, centred."""
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, torch.Tensor) else wave)
        wave = wave.to(torch.float32)
        if wave.ndim == 2:  # (channels, samples): a mono mix, as the extractor makes of stereo input
            wave = wave.mean(dim=0)
        if wave.ndim != 1:
            raise ValueError(f"expected a waveform of shape (samples,) or (channels, samples), got {tuple(wave.shape)}")
        wave = resample(wave, int(rate), self.sampling_rate)[:self.max_samples]
        if wave.shape[-1] < self.n_fft:
            pad = self.n_fft - wave.shape[-1]
            wave = torch.nn.functional.pad(wave, (pad // 2, pad // 2 + pad % 2))
        return wave

    def energies(self, wave: np.ndarray | torch.Tensor, rate: int) -> torch.Tensor:
        """(frames, num_chroma): each frame's energy per pitch class (C first), over its largest."""
        raw = self.filters() @ self.power_spectrogram(self.prepare(wave, rate))  # (num_chroma, frames)
        raw = torch.nn.functional.normalize(raw, p=float("inf"), dim=0, eps=1e-6)
        return raw.T.contiguous()

    def __call__(self, wave: np.ndarray | torch.Tensor, rate: int) -> torch.Tensor:
        """(1, frames, num_chroma) float32, one-hot at each frame's strongest pitch class: the model's
        `input_features` for this clip."""
        energies = self.energies(wave, rate)
        one_hot = torch.zeros_like(energies)
        one_hot.scatter_(-1, energies.argmax(-1, keepdim=True), 1.0)
        return one_hot[None]
