"""RRDBNet, the ESRGAN / Real-ESRGAN generator, in one file: the network, the checkpoint layouts it
is published in, and reading those files safely.

The network (Wang et al., ESRGAN 2018; Real-ESRGAN 2021) as BasicSR's `basicsr/archs/rrdbnet_arch.py`
defines it:

    conv_first -> body (num_block x RRDB) -> conv_body, + the skip from conv_first
    -> n_up x (nearest 2x upsample -> conv_upK -> LeakyReLU 0.2) -> conv_hr -> LeakyReLU -> conv_last

An RRDB is three residual dense blocks (rdb1..rdb3), each five 3x3 convs where conv k sees the input
and every earlier conv's output (num_grow_ch channels each), scaled by 0.2 before its skip; the RRDB
scales its own sum by 0.2 again. Real-ESRGAN's x2 and x1 models first fold the image with
pixel_unshuffle (2 and 4) and still upsample twice; the original ESRGAN repo's models upsample
log2(scale) times from the image itself.

Layouts read (all converted to BasicSR's names, which this module's state dict uses):
- BasicSR / Real-ESRGAN: `conv_first`, `body.N.rdb1.conv1`, `conv_body`, `conv_up1`, `conv_up2`,
  `conv_hr`, `conv_last`; the release `.pth` wraps it in `{"params_ema": ...}` (or `"params"`).
- The original ESRGAN (`RRDB_ESRGAN_x4.pth`'s old-arch): a `model.` Sequential — `model.0` the first
  conv, `model.1.sub.N.RDB1.conv1.0` the blocks, `model.1.sub.<num_block>` the trunk conv, then one conv
  per upsample, the HR conv and the last conv at the Sequential's later indices.
- The ESRGAN repo's later names: `RRDB_trunk.N.RDB1.conv1`, `trunk_conv`, `upconv1`, `HRconv`.
A `.pth` is read with `torch.load(weights_only=True)` only: tensors and plain containers, never
arbitrary objects. The sizes (scale, num_feat, num_block, num_grow_ch) are read off the tensors.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import ModelNotAvailable

WRAPPERS = ("params_ema", "params", "state_dict", "model_state_dict")  # what release files nest the weights in


@dataclass(frozen=True)
class RRDBConfig:
    """One RRDBNet's sizes. `unshuffle` folds the input (Real-ESRGAN x2: 2, x1: 4); `n_up` 2x upsamples."""

    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    in_ch: int = 3
    out_ch: int = 3
    unshuffle: int = 1
    n_up: int = 2

    @property
    def scale(self) -> int:
        return 2 ** self.n_up // self.unshuffle

    @classmethod
    def for_scale(cls, scale: int, **sizes: Any) -> "RRDBConfig":
        """BasicSR's RRDBNet(scale=...): x4 as it is, x2 and x1 by pixel_unshuffle (always two upsamples)."""
        if scale not in (1, 2, 4):
            raise ValueError(f"BasicSR's RRDBNet is x1, x2 or x4, not x{scale}")
        return cls(unshuffle=4 // scale, n_up=2, **sizes)

    def receptive_radius(self) -> float:
        """How many input pixels around a pixel its output depends on: 3x3 convs, 15 per RRDB, each
        worth 1/s input px at s times the size. A tile overlap of at least this gives untiled pixels."""
        fold = self.unshuffle
        radius = (1 + 15 * self.num_block + 1) * fold  # conv_first, the blocks, conv_body: at 1/fold size
        for k in range(1, self.n_up + 1):  # each upsample's conv, at 2^k / fold times the input size
            radius += fold / 2 ** k
        return radius + 2 * fold / 2 ** self.n_up  # conv_hr and conv_last


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        for k in range(1, 6):
            out = num_feat if k == 5 else num_grow_ch
            setattr(self, f"conv{k}", nn.Conv2d(num_feat + (k - 1) * num_grow_ch, out, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k in range(1, 5):
            features.append(F.leaky_relu(getattr(self, f"conv{k}")(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """Images in [0, 1], (B, 3, H, W) -> (B, 3, H * scale, W * scale); H and W multiples of `unshuffle`."""

    def __init__(self, config: RRDBConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.conv_first = nn.Conv2d(c.in_ch * c.unshuffle ** 2, c.num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(c.num_feat, c.num_grow_ch) for _ in range(c.num_block)))
        self.conv_body = nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1)
        for k in range(1, c.n_up + 1):
            setattr(self, f"conv_up{k}", nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(c.num_feat, c.out_ch, 3, 1, 1)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.config.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for k in range(1, self.config.n_up + 1):
            feat = F.leaky_relu(getattr(self, f"conv_up{k}")(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


# -- checkpoint layouts -> BasicSR's names ---------------------------------------------------------

_LATER_ESRGAN = [(re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
                 (re.compile(r"^trunk_conv\."), "conv_body."), (re.compile(r"^upconv(\d)\."), r"conv_up\1."),
                 (re.compile(r"^HRconv\."), "conv_hr.")]
_OLD_BLOCK = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_CONV = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")


def unwrap(raw: Any) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: inside a release file's `params_ema` (or `params`…) when it has one;
    a flat file whose keys carry that prefix (a safetensors repackaging) loses it."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"it holds a {type(raw).__name__}, not a state dict")
    for key in WRAPPERS:
        if isinstance(raw.get(key), Mapping):
            raw = raw[key]
            break
    state = {}
    for key, value in raw.items():
        if isinstance(value, torch.Tensor):
            for prefix in (*WRAPPERS, "module"):
                key = key.removeprefix(prefix + ".")
            state[str(key)] = value
    return state


def to_basicsr(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any of the three layouts, in BasicSR's key names (unchanged when already in them)."""
    if "model.0.weight" not in state:
        out = {}
        for key, value in state.items():
            for pattern, replacement in _LATER_ESRGAN:
                key = pattern.sub(replacement, key)
            out[key] = value
        return out
    blocks = {int(m.group(1)) for m in map(_OLD_BLOCK.match, state) if m}
    trunk = max(blocks, default=-1) + 1  # model.1.sub.<num_block> is the trunk conv
    tail = sorted({int(m.group(1)) for m in map(_OLD_CONV.match, state) if m and int(m.group(1)) >= 2})
    names = {0: "conv_first"}
    if len(tail) >= 2:  # one conv per upsample, then HR and last
        names.update({index: f"conv_up{k + 1}" for k, index in enumerate(tail[:-2])})
        names.update({tail[-2]: "conv_hr", tail[-1]: "conv_last"})
    out = {}
    for key, value in state.items():
        if m := _OLD_BLOCK.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif (m := _OLD_TRUNK.match(key)) and int(m.group(1)) == trunk:
            out[f"conv_body.{m.group(2)}"] = value
        elif (m := _OLD_CONV.match(key)) and int(m.group(1)) in names:
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = value
        else:
            out[key] = value  # left as it is: named as unexpected when it does not fit
    return out


def config_from(state: Mapping[str, torch.Tensor], old_layout: bool = False) -> RRDBConfig:
    """The sizes an RRDBNet state dict (BasicSR names) was made with; ValueError when it is not one."""
    needed = ("conv_first.weight", "conv_body.weight", "conv_hr.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        held = ", ".join(sorted(state)[:4]) or "no tensors"
        raise ValueError(f"its keys do not fit an RRDBNet (ESRGAN): no {', '.join(absent[:3])} (it holds {held}…)")
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    num_feat, in_folded = int(first.shape[0]), int(first.shape[1])
    out_ch = int(last.shape[0])
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    n_up = sum(1 for k in state if re.fullmatch(r"conv_up\d+\.weight", k))
    fold = math.isqrt(max(in_folded // out_ch, 1))
    if fold * fold * out_ch != in_folded or fold not in (1, 2, 4) or (old_layout and fold != 1):
        raise ValueError(f"its first conv takes {in_folded} channels, which fits no RRDBNet of {out_ch} colours")
    grow = int(state["body.0.rdb1.conv1.weight"].shape[0])
    return RRDBConfig(num_feat=num_feat, num_block=max(blocks) + 1, num_grow_ch=grow, in_ch=out_ch, out_ch=out_ch,
                      unshuffle=fold, n_up=n_up)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a `.pth` (weights only); ModelNotAvailable says what is wrong."""
    if not path.is_file():
        raise ModelNotAvailable(f"{path.name} is not in the model cache; download the upscaler first")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelNotAvailable(f"{path.name} holds Python objects besides tensors and is not loaded for safety: "
                                f"{str(err).splitlines()[0]}") from None
    except Exception as err:  # truncated, empty, not a weights file at all
        raise ModelNotAvailable(f"cannot read {path.name} as model weights (damaged, incomplete, or not a weights "
                                f"file): {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    try:
        return unwrap(raw)
    except ValueError as err:
        raise ModelNotAvailable(f"{path.name} is not an upscaler checkpoint: {err}") from None


def load_rrdbnet(path: Path, dtype: torch.dtype = torch.float32) -> RRDBNet:
    """The RRDBNet in `path` (any layout above), its sizes read off the file; ModelNotAvailable, naming
    what does not fit, for anything else (another architecture, a cut file)."""
    raw = read_state(path)
    state = to_basicsr(raw)
    try:
        config = config_from(state, old_layout="model.0.weight" in raw)
    except ValueError as err:
        raise ModelNotAvailable(f"{path.name} is not an ESRGAN / Real-ESRGAN (RRDBNet) upscaler: {err}. The studio "
                                "runs RRDBNet natively; other architectures (SwinIR, HAT…) need spandrel "
                                "(pip install 'studio[upscale]')") from None
    with torch.device("meta"):
        model = RRDBNet(config)
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
    wrong = [k for k in wanted if k in state and tuple(state[k].shape) != wanted[k]]
    if missing or unexpected or wrong:
        listed = lambda names: ", ".join(names[:3]) or "nothing"  # noqa: E731
        raise ModelNotAvailable(
            f"{path.name} does not fit an RRDBNet of {config.num_block} blocks, {config.num_feat} features: missing "
            f"{listed(missing)}; unexpected {listed(unexpected)}; wrong shape {listed(wrong)}")
    model.load_state_dict({k: state[k].to(dtype) for k in wanted}, strict=True, assign=True)
    return model.eval()


__all__ = ["RRDBConfig", "RRDBNet", "config_from", "load_rrdbnet", "read_state", "to_basicsr", "unwrap"]
