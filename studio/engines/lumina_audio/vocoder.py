"""The BigVGAN vocoder of Lumina-T2Audio / T2Music (log-mel -> 16 kHz waveform), in one file.

The reference is Alpha-VLLM/Lumina-T2X `lumina_audio/models/vocoder/bigvgan/` (`models.py`:
`BigVGAN`, `AMPBlock1`, `AMPBlock2`, `VocoderBigVGAN`; `activations.py`: `Snake`, `SnakeBeta`;
`alias_free_torch/`: `Activation1d`, `UpSample1d`, `DownSample1d`, `LowPassFilter1d`,
`kaiser_sinc_filter1d`), NVIDIA's BigVGAN v1 generator; `lumina_music/` has the same files.
`VocoderBigVGAN(folder)` builds it from the folder's `args.yml` and loads `best_netG.pt`'s
"generator" with strict=True.

The generator: `conv_pre` (kernel 7, num_mels -> upsample_initial_channel); per upsample rate a
transposed conv (`ups.i.0`, kernel k, stride u, padding (k - u) / 2) halving the width, then the
mean of one AMP block per resblock kernel size; `activation_post`, `conv_post` (kernel 7 -> 1)
and tanh. An AMP block (resblock "1") is three pairs of dilated/undilated convs, each conv after
an anti-aliased activation, with a residual per pair; resblock "2" is two single convs. The
activation is Snake (x + sin^2(a x) / a) or SnakeBeta (x + sin^2(a x) / b), a and b per channel,
exp'd when `snake_logscale`; anti-aliased means run at twice the rate: upsampled x2 by a
12-tap Kaiser-windowed sinc (replicate-padded transposed conv), activated, low-passed and
decimated x2 by the same kind of filter. The filters are persistent buffers, so they are in the
state dict (`...upsample.filter`, `...downsample.lowpass.filter`) and load with it.

Weight norm: the reference wraps every conv in the old `torch.nn.utils.weight_norm`, so its
tensors are `*.weight_g` and `*.weight_v` (norm over all dims but 0, the default `dim=0`; for
the transposed convs that is the input channel). It recomputes weight = v * (g / ||v||) on every
call; here `fold_weight_norm` does it once on load, with torch's own `_weight_norm` (the op both
weight_norm implementations call, so the weights are the same bits), and the convs are plain
`nn.Conv1d`/`nn.ConvTranspose1d`. A state dict that already holds plain `weight`s (weight norm
removed) loads as well.

NVIDIA's `bigvgan` package on PyPI (2.4.1, author NVIDIA: the BigVGAN v2 repository packaged; its
code read, not run) could load these weights: its generator has the same module tree and names,
keeps the old weight_norm, and its v2 switches default to v1's behaviour when args.yml lacks them
(`use_bias_at_final`, `use_tanh_at_final` True); its filter, resampling and snake code differs from
this copy in formatting only. It is not used: `import bigvgan` imports its meldataset and so
librosa, and the wheel requires its training stack (auraloss, pesq, nnaudio, tensorboard,
matplotlib, ninja), none of which Studio has; this generator is ~250 lines and is checked against
the reference itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SNAKE_EPS = 0.000000001  # the reference's no_div_by_zero


@dataclass(frozen=True)
class VocoderConfig:
    """The fields of BigVGAN's `args.yml` that shape the generator (the rest are training settings)."""

    num_mels: int = 80
    upsample_initial_channel: int = 1536
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    resblock: Any = "1"  # as the file has it: the reference compares it to the string "1" (else AMPBlock2)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    activation: str = "snakebeta"
    snake_logscale: bool = True
    sampling_rate: int | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "VocoderConfig":
        """From args.yml's mapping (yaml.safe_load); its other keys are kept in `extra`."""
        shaped = {"num_mels", "upsample_initial_channel", "upsample_rates", "upsample_kernel_sizes", "resblock",
                  "resblock_kernel_sizes", "resblock_dilation_sizes", "activation", "snake_logscale",
                  "sampling_rate"}
        kwargs: dict[str, Any] = {k: args[k] for k in shaped if k in args}
        for k in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            if k in kwargs:
                kwargs[k] = tuple(int(v) for v in kwargs[k])
        if "resblock_dilation_sizes" in kwargs:
            dilations = kwargs["resblock_dilation_sizes"]
            kwargs["resblock_dilation_sizes"] = tuple(tuple(int(v) for v in d) for d in dilations)
        config = cls(**kwargs, extra={k: v for k, v in args.items() if k not in shaped})
        if config.activation not in ("snake", "snakebeta"):
            raise ValueError(f"BigVGAN activation {config.activation!r}: the reference knows snake and snakebeta")
        return config

    @classmethod
    def read(cls, path: str | Path) -> "VocoderConfig":
        import yaml

        return cls.from_args(yaml.safe_load(Path(path).read_text()))

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """A (1, 1, kernel_size) Kaiser-windowed sinc low-pass, normalised to sum 1 (alias_free_torch)."""
    even = kernel_size % 2 == 0
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    attenuation = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    time = torch.arange(-half_size, half_size) + 0.5 if even else torch.arange(kernel_size) - half_size
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    taps /= taps.sum()
    return taps.view(1, 1, kernel_size)


class Snake(nn.Module):
    """x + sin^2(a x) / a (SnakeBeta: / b), per channel; a (and b) exp'd when on a log scale."""

    def __init__(self, channels: int, beta: bool, logscale: bool) -> None:
        super().__init__()
        self.logscale = logscale
        init = torch.zeros if logscale else torch.ones
        self.alpha = nn.Parameter(init(channels))
        if beta:
            self.beta = nn.Parameter(init(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.unsqueeze(0).unsqueeze(-1)
        beta = self.beta.unsqueeze(0).unsqueeze(-1) if hasattr(self, "beta") else None
        if self.logscale:
            alpha = torch.exp(alpha)
            beta = torch.exp(beta) if beta is not None else None
        return x + (1.0 / ((alpha if beta is None else beta) + SNAKE_EPS)) * torch.pow(torch.sin(x * alpha), 2)


class UpSample1d(nn.Module):
    """x2 by a replicate-padded transposed conv with the 12-tap low-pass (times the ratio)."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.pad_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.pad_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(C, -1, -1), stride=self.ratio, groups=C)
        return x[..., self.pad_left:-self.pad_right]


class LowPassFilter1d(nn.Module):
    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int = 12) -> None:
        super().__init__()
        even = kernel_size % 2 == 0
        self.pad_left, self.pad_right = kernel_size // 2 - int(even), kernel_size // 2
        self.stride = stride
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(C, -1, -1), stride=self.stride, groups=C)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, stride=ratio, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Activation1d(nn.Module):
    """The activation at twice the rate: upsample, act, downsample."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act
        self.upsample = UpSample1d(2, 12)
        self.downsample = DownSample1d(2, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def padding(kernel_size: int, dilation: int = 1) -> int:
    return int((kernel_size * dilation - dilation) / 2)


class AMPBlock(nn.Module):
    """AMPBlock1 (`convs1` dilated, `convs2` not, pairs) or AMPBlock2 (`convs` alone)."""

    def __init__(self, c: VocoderConfig, channels: int, kernel_size: int, dilation: tuple[int, ...]) -> None:
        super().__init__()
        self.pairs = c.resblock == "1"

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=padding(kernel_size, d))

        if self.pairs:
            self.convs1 = nn.ModuleList(conv(d) for d in dilation[:3])
            self.convs2 = nn.ModuleList(conv(1) for _ in range(3))
            count = 6
        else:
            self.convs = nn.ModuleList(conv(d) for d in dilation[:2])
            count = 2
        beta = c.activation == "snakebeta"
        self.activations = nn.ModuleList(Activation1d(Snake(channels, beta, c.snake_logscale)) for _ in range(count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pairs:
            acts1, acts2 = self.activations[::2], self.activations[1::2]
            for c1, c2, a1, a2 in zip(self.convs1, self.convs2, acts1, acts2):
                x = c2(a2(c1(a1(x)))) + x
        else:
            for conv, act in zip(self.convs, self.activations):
                x = conv(act(x)) + x
        return x


class BigVGAN(nn.Module):
    """The generator: forward(mel (B, num_mels, T)) -> waveform (B, 1, T * hop_length) in [-1, 1]."""

    def __init__(self, config: VocoderConfig = VocoderConfig()) -> None:
        super().__init__()
        c = self.config = config
        self.num_kernels = len(c.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(c.num_mels, c.upsample_initial_channel, 7, 1, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            ch_in, ch = c.upsample_initial_channel // (2 ** i), c.upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(nn.ModuleList([nn.ConvTranspose1d(ch_in, ch, k, u, padding=(k - u) // 2)]))
            for k_res, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                self.resblocks.append(AMPBlock(c, ch, k_res, d))
        self.activation_post = Activation1d(Snake(ch, c.activation == "snakebeta", c.snake_logscale))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, ups in enumerate(self.ups):
            for up in ups:
                x = up(x)
            xs = None
            for j in range(self.num_kernels):
                out = self.resblocks[i * self.num_kernels + j](x)
                xs = out if xs is None else xs + out
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x)


def fold_weight_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`X.weight_g` + `X.weight_v` (the old torch.nn.utils.weight_norm, dim 0) -> `X.weight`, computed
    by torch's `_weight_norm` as the reference's forward computes it; other tensors pass through."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        stem, _, leaf = key.rpartition(".")
        prefix = stem + "." if stem else ""
        if leaf == "weight_g":
            if prefix + "weight_v" not in state_dict:
                raise KeyError(f"{key} has no {prefix}weight_v")
        elif leaf == "weight_v":
            g = state_dict.get(prefix + "weight_g")
            if g is None:
                raise KeyError(f"{key} has no {prefix}weight_g")
            out[prefix + "weight"] = torch._weight_norm(value, g, 0)
        else:
            out[key] = value
    return out


def read_vocoder(folder: str | Path, device: torch.device | str = "cpu", title: str = "the model") -> BigVGAN:
    """VocoderBigVGAN(folder): args.yml and best_netG.pt's "generator", strictly loaded, eval.
    best_netG.pt is read as the Lightning checkpoint is (checkpoint.safe_load: weights only)."""
    from ...errors import ModelNotAvailable
    from .checkpoint import safe_load

    folder = Path(folder)
    args = folder / "args.yml"
    if not args.is_file():
        raise ModelNotAvailable(f"{folder.name}/args.yml is not in the model cache; download {title} first.")
    try:
        config = VocoderConfig.read(args)
    except Exception as err:  # not yaml, not a mapping, an unknown activation
        raise ModelNotAvailable(f"{folder.name}/args.yml is not a BigVGAN config: {err}") from None
    checkpoint = safe_load(folder / "best_netG.pt", title)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("generator"), dict):
        raise ModelNotAvailable(f"{folder.name}/best_netG.pt has no generator weights")
    model = BigVGAN(config)
    try:
        model.load_state_dict(fold_weight_norm(checkpoint["generator"]), strict=True)
    except (RuntimeError, KeyError) as err:
        first = str(err).splitlines()[0][:300]
        raise ModelNotAvailable(f"{folder.name}/best_netG.pt does not fit its args.yml: {first}") from None
    return model.to(device).eval()
