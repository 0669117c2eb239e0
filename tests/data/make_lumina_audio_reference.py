"""Write tests/data/lumina_audio_reference.json by running Alpha-VLLM/Lumina-T2X's own Lumina-T2Audio
code (lumina_audio/models: FlagDiTv2, CFM, AutoencoderKL, BigVGAN) and torchdyn's own NeuralODE on the
seeded cases of tests/test_lumina_audio_engine.py (CPU, float32).

    git clone https://github.com/Alpha-VLLM/Lumina-T2X /tmp/Lumina-T2X          # tested at 1c60696
    git clone https://github.com/DiffEqML/torchdyn /tmp/torchdyn -b 1.0.6       # PyPI's torchdyn 1.0.6
    python tests/data/make_lumina_audio_reference.py /tmp/Lumina-T2X /tmp/torchdyn

(From bare mirrors: `git -C MIRROR archive HEAD lumina_audio | tar -x -C /tmp/Lumina-T2X` and
`git -C TORCHDYN_MIRROR archive 1.0.6 torchdyn | tar -x -C /tmp/torchdyn`, then pass
`--commit $(git -C MIRROR rev-parse HEAD)`.)

What the reference imports but cannot install or run here is replaced by stand-ins, written to a
temporary folder put on sys.path; nothing on the paths these cases take:
- flash_attn (imported unconditionally by flag_large_dit.py): in float32 the reference takes its
  SDPA branch; the stand-ins raise if called.
- einops: `rearrange` for the two patterns FlagDiT.forward uses ("b c t -> b t c" and back), a
  transpose; anything else raises.
- pytorch_lightning: LightningModule is nn.Module; rank_zero_only is the identity. torchvision's
  make_grid and omegaconf's ListConfig/OmegaConf (imported, not used here) raise or are empty.
- For torchdyn, which is real: torchsde and torchcde (SDEs, interpolated adjoints) and attr
  (event bookkeeping) are empty stand-ins; none is on the Euler path.
- `torch.compile` (on FeedForward's silu gating) is the identity: the eager function it compiles.
- `FlagDiT.precompute_freqs_cis` calls `.cuda()`: torch.Tensor.cuda returns the tensor itself.

The CFM is the reference's class without its __init__ (which would build CLAP, T5 and load
checkpoints): CFM.__new__, then the attributes `sample_cfg`/`sample`/`apply_model`/
`decode_first_stage` read (`model` a real DiffusionWrapper(FlagDiTv2 config, "crossattn"),
channels 0, mel_dim, mel_length, first_stage_model, a scale_factor buffer), and it is called as
demo_audio.py's GenSamples.gen_test_sample calls it: sample_cfg(c, scale, uc, 1, timesteps=steps,
x_latent=x0, solver="euler"), or sample(...) when the scale is 1. The vocoder is
models.vocoder.bigvgan.models.BigVGAN(h) with h the case's args as attributes (what OmegaConf
gives VocoderBigVGAN), and `generator(spec)` as VocoderBigVGAN.vocode calls it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
STUBS = {
    "flash_attn/__init__.py": '''
def flash_attn_func(*args, **kwargs):
    raise AssertionError("the float32 reference took its flash-attn branch")

flash_attn_varlen_func = flash_attn_func
''',
    "flash_attn/bert_padding.py": '''
def index_first_axis(*args, **kwargs):
    raise AssertionError("flash-attn padding called")

pad_input = unpad_input = index_first_axis
''',
    "einops/__init__.py": '''
def rearrange(x, pattern, **axes):
    if pattern.replace(" ", "") in ("bct->btc", "btc->bct") and not axes:
        return x.transpose(1, 2)
    raise NotImplementedError(pattern)

def repeat(*args, **kwargs):
    raise NotImplementedError("einops.repeat")
''',
    "pytorch_lightning/__init__.py": '''
import torch.nn as nn

class LightningModule(nn.Module):
    pass
''',
    "pytorch_lightning/utilities/__init__.py": '''
def rank_zero_only(fn):
    return fn
''',
    "pytorch_lightning/utilities/distributed.py": "from . import rank_zero_only  # noqa: F401\n",
    "torchvision/__init__.py": "",
    "torchvision/utils.py": '''
def make_grid(*args, **kwargs):
    raise NotImplementedError("make_grid")
''',
    "omegaconf/__init__.py": '''
class ListConfig(list):
    pass

class OmegaConf:
    @staticmethod
    def load(*args, **kwargs):
        raise NotImplementedError("OmegaConf.load")
''',
    "torchsde/__init__.py": '''
def sdeint(*args, **kwargs):
    raise NotImplementedError("torchsde")

sdeint_adjoint = sdeint
''',
    "torchsde/_brownian.py": '''
class BaseBrownian:
    pass

class BrownianInterval(BaseBrownian):
    pass
''',
    "torchcde/__init__.py": '''
class CubicSpline:
    pass

def natural_cubic_coeffs(*args, **kwargs):
    raise NotImplementedError("torchcde")

hermite_cubic_coefficients_with_backward_differences = natural_cubic_coeffs
''',
    "attr/__init__.py": '''
def s(cls=None, **kwargs):
    return cls if cls is not None else (lambda c: c)

def ib(default=None, **kwargs):
    return default
''',
}


def shapes_of(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def folded(shapes: dict) -> dict:
    """weight_g/weight_v pairs named as the weight they make (v's shape); the rest as they are."""
    out = {}
    for k, v in shapes.items():
        if k.endswith(".weight_g"):
            continue
        out[k[: -len("_v")] if k.endswith(".weight_v") else k] = v
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="a checkout of Alpha-VLLM/Lumina-T2X (lumina_audio/ is used)")
    parser.add_argument("torchdyn", type=Path, help="a checkout of DiffEqML/torchdyn (its torchdyn/ package)")
    parser.add_argument("--commit", help="the reference's commit, when the checkout is not a git work tree")
    parser.add_argument("--out", type=Path, default=HERE / "lumina_audio_reference.json")
    args = parser.parse_args()

    stubs = Path(tempfile.mkdtemp(prefix="lumina-audio-stubs-"))
    for name, text in STUBS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(textwrap.dedent(text))
    # demo_audio.py runs from lumina_audio/ and imports `models` from there.
    sys.path[:0] = [str(args.reference / "lumina_audio"), str(stubs), str(args.torchdyn), str(HERE.parent.parent),
                    str(HERE.parent)]

    import torch

    torch.Tensor.cuda = lambda self, *a, **kw: self  # precompute_freqs_cis: `.float().cuda()`
    torch.compile = lambda fn=None, *a, **kw: fn if fn is not None else (lambda f: f)

    import models.autoencoder1d as RA
    import models.diffusion.ddpm as RD
    import models.diffusion.ddpm_audio as RDA
    import models.diffusion.flag_large_dit as RF
    import models.vocoder.bigvgan.models as RV
    import test_lumina_audio_engine as T
    import torchdyn

    commit = args.commit
    try:
        commit = commit or subprocess.run(["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True,
                                          text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass

    def load(ref, state, strict=True):
        result = ref.load_state_dict({k: v.clone() for k, v in state.items()}, strict=strict)
        assert not result.unexpected_keys, result
        if strict:
            assert not result.missing_keys, result
        return ref.eval()

    def dit_kwargs(c):
        return dict(in_channels=c.in_channels, context_dim=c.context_dim, hidden_size=c.hidden_size, depth=c.depth,
                    num_heads=c.num_heads, max_len=c.max_len)

    def reference_dit(state):
        return load(RF.FlagDiTv2(**dit_kwargs(T.TINY_DIT)), state)

    def ddconfig(c):
        return dict(double_z=True, in_channels=c.out_ch, out_ch=c.out_ch, z_channels=c.z_channels,
                    kernel_size=c.kernel_size, ch=c.ch, ch_mult=list(c.ch_mult), num_res_blocks=c.num_res_blocks,
                    attn_layers=list(c.attn_layers), down_layers=list(c.down_layers), dropout=0.0)

    def reference_vae(c, state):
        ref = RA.AutoencoderKL(embed_dim=c.embed_dim, ddconfig=ddconfig(c), lossconfig={"target": "torch.nn.Identity"})
        result = ref.load_state_dict(state, strict=False)  # the decoder's half; the encoder keeps its init
        encoder = ("encoder.", "quant_conv.")
        assert not result.unexpected_keys and all(k.startswith(encoder) for k in result.missing_keys), result
        return ref.eval()

    def vocoder_args(c):
        return SimpleNamespace(num_mels=c.num_mels, upsample_initial_channel=c.upsample_initial_channel,
                               upsample_rates=list(c.upsample_rates),
                               upsample_kernel_sizes=list(c.upsample_kernel_sizes),
                               resblock=c.resblock, resblock_kernel_sizes=list(c.resblock_kernel_sizes),
                               resblock_dilation_sizes=[list(d) for d in c.resblock_dilation_sizes],
                               activation=c.activation, snake_logscale=c.snake_logscale)

    def reference_vocoder(c, state):
        ref = RV.BigVGAN(vocoder_args(c))
        result = ref.load_state_dict(state, strict=False)  # its anti-aliasing filters are its own
        assert not result.unexpected_keys and all(k.endswith(".filter") for k in result.missing_keys), result
        assert result.missing_keys, "the filters are buffers in the state dict"
        return ref.eval()

    def reference_cfm(dit_state, vae=None, scale_factor=None):
        cfm = RDA.CFM.__new__(RDA.CFM)
        torch.nn.Module.__init__(cfm)
        config = {"target": "models.diffusion.flag_large_dit.FlagDiTv2", "params": dit_kwargs(T.TINY_DIT)}
        cfm.model = RD.DiffusionWrapper(config, "crossattn")
        load(cfm.model.diffusion_model, dit_state)
        cfm.channels, cfm.mel_dim, cfm.mel_length, cfm.sigma_min = 0, T.TINY_DIT.in_channels, None, 1e-4
        if vae is not None:
            cfm.first_stage_model = vae
            cfm.register_buffer("scale_factor", torch.tensor(scale_factor))
        calls = []
        forward = cfm.model.diffusion_model.forward

        def counted(x, t, context):
            calls.append([x.shape[0], t.tolist()])
            return forward(x, t, context)

        cfm.model.diffusion_model.forward = counted
        return cfm.eval(), calls

    def run(cfm, c, noise, cond, uncond):
        """demo_audio.py GenSamples.gen_test_sample: sample_cfg unless the scale is 1."""
        with torch.no_grad():
            if c["cfg"] == 1:
                sample, _ = cfm.sample(cond, 1, timesteps=c["steps"], x_latent=noise, solver="euler")
            else:
                sample, _ = cfm.sample_cfg(cond, c["cfg"], uncond, 1, timesteps=c["steps"], x_latent=noise,
                                           solver="euler")
        return sample

    golden = {"reference": {"repo": "Alpha-VLLM/Lumina-T2X", "commit": commit},
              "torchdyn": getattr(torchdyn, "__version__", "?")}

    # Shapes of the released configs, from the reference modules themselves (built on the CPU).
    shapes = {}
    dit = RF.FlagDiTv2(in_channels=20, context_dim=1024, hidden_size=768, num_heads=32, depth=16, max_len=1000)
    s = shapes_of(dit)
    shapes["FlagDiTv2"] = {"parameters": sum(p.numel() for p in dit.parameters()), "tensors": len(s),
                           "signature": T.signature(s)}
    del dit
    vae = RA.AutoencoderKL(embed_dim=20, ddconfig=ddconfig(T.VAEConfig()), lossconfig={"target": "torch.nn.Identity"})
    decode = ("decoder.", "post_quant_conv.")
    s = {k: v for k, v in shapes_of(vae).items() if k.startswith(decode)}
    shapes["AutoencoderKL decode"] = {
        "parameters": sum(p.numel() for k, p in vae.named_parameters() if k.startswith(decode)),
        "tensors": len(s), "signature": T.signature(s),
        "whole parameters": sum(p.numel() for p in vae.parameters())}
    del vae
    voc = RV.BigVGAN(vocoder_args(T.ASSUMED_VOCODER))
    s = shapes_of(voc)
    f = folded(s)
    shapes["BigVGAN assumed"] = {
        "parameters": sum(p.numel() for p in voc.parameters()), "tensors": len(s),
        "folded parameters": sum(p.numel() for k, p in voc.named_parameters() if not k.endswith(".weight_g")),
        "tensors folded": len(f), "signature folded": T.signature(f)}
    del voc
    golden["shapes"] = shapes
    print(json.dumps(shapes, indent=1))

    for name in T.DIT_CASES:
        c = T.dit_case(name)
        ref = reference_dit(c["model"].state_dict())
        with torch.no_grad():
            out = ref(c["x"], c["t"], c["context"])
        golden[name] = {"shape": list(out.shape), "out": T.rounded(out)}
        print(name, tuple(out.shape), "max |v|", out.abs().max().item())

    # The integer timesteps of each grid: a model that records them and returns zeros.
    grid_model = T.dit_case("dit-forward")["model"].state_dict()
    golden["timesteps"] = {}
    for steps in T.GRID_STEPS:
        cfm, calls = reference_cfm(grid_model)
        cfm.model.diffusion_model.forward = lambda x, t, context, calls=calls: calls.append(t.tolist()) or 0 * x
        run(cfm, {"cfg": 1, "steps": steps}, torch.zeros(1, T.TINY_DIT.in_channels, 3), torch.zeros(1, 2, 32), None)
        golden["timesteps"][str(steps)] = [t[0] for t in calls]
    print("timesteps", {k: v[:6] for k, v in golden["timesteps"].items()})

    for name, spec in T.SAMPLE_CASES.items():
        c = T.sample_case(spec)
        cfm, calls = reference_cfm(c["model"].state_dict())
        latent = run(cfm, c, c["noise"].clone(), c["cond"], c["uncond"])
        golden[name] = {"calls": calls, "shape": list(latent.shape), "latent": T.rounded(latent)}
        print(name, "calls", len(calls), "max |x|", latent.abs().max().item())

    for name in T.VAE_CASES:
        c = T.vae_case(name)
        ref = reference_vae(c["config"], c["model"].state_dict())
        with torch.no_grad():
            mel = ref.decode(c["z"])
        golden[name] = {"shape": list(mel.shape), "mel": T.rounded(mel)}
        print(name, tuple(mel.shape), "max |mel|", mel.abs().max().item())

    for name, spec in T.VOCODER_CASES.items():
        c = T.vocoder_case(spec)
        ref = reference_vocoder(c["config"], c["reference_state"])
        with torch.no_grad():
            wav = ref(c["mel"])
        golden[name] = {"shape": list(wav.shape), "wav": T.rounded(wav)}
        print(name, tuple(wav.shape), "max |wav|", wav.abs().max().item())

    c = T.chain_case()
    vae = reference_vae(T.TINY_VAE, c["vae"].state_dict())
    vocoder = reference_vocoder(T.TINY_VOCODER, c["vocoder_state"])
    cfm, calls = reference_cfm(c["model"].state_dict(), vae, T.CHAIN["scale_factor"])
    latent = run(cfm, c, c["noise"].clone(), c["cond"], c["uncond"])
    with torch.no_grad():
        mel = cfm.decode_first_stage(latent)
        wav = vocoder(mel)  # VocoderBigVGAN.vocode: generator(spec), then squeeze
    golden["chain"] = {"latent shape": list(latent.shape), "latent": T.rounded(latent),
                       "mel shape": list(mel.shape), "mel": T.rounded(mel),
                       "wav shape": list(wav.shape), "wav": T.rounded(wav)}
    print("chain", tuple(latent.shape), tuple(mel.shape), tuple(wav.shape))

    digest = hashlib.sha256(json.dumps(golden, sort_keys=True).encode()).hexdigest()[:12]
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in golden.items()]
    args.out.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print("wrote", args.out, digest)


if __name__ == "__main__":
    main()
