"""The Lumina-T2Audio / T2Music engine foundations (studio/engines/lumina_audio/) against the reference.

Two kinds of checks:
- Shapes on the meta device: the released configs' FlagDiTv2 (197,940,244 parameters, 254 tensors),
  the mel VAE's decoder and post_quant_conv, and a BigVGAN of the assumed released shape, each
  with the reference's own parameter names and shapes, recorded by the generator from the
  reference modules (a sha256 over sorted "name shape" lines; the vocoder's `weight_g`/`weight_v`
  pairs named as the `weight` they fold into).
- Numbers: Alpha-VLLM/Lumina-T2X's own code (lumina_audio/models, at the commit in the golden file)
  run on tiny seeded models by tests/data/make_lumina_audio_reference.py, kept in
  tests/data/lumina_audio_reference.json: FlagDiTv2.forward; CFM.sample_cfg and CFM.sample
  through torchdyn's NeuralODE (euler), with the integer timesteps the model was handed;
  AutoencoderKL.decode; BigVGAN's generator; and a whole latent -> mel -> waveform chain
  (sample_cfg, decode_first_stage with a scale_factor, the vocoder). CPU, float32; every number
  must agree to float32 rounding relative to the tensor's largest entry (1e-5). On the machine that
  wrote the file every case was the golden values to their 8 significant digits (max difference
  7.5e-9, the rounding of the file). With SDPA in the VAE's middle attention instead of the
  reference's two bmm and softmax it was 1.2e-6 of max |mel|: inside the bound, not exact.

The weights are seeded here (`fill`, the `*_case` functions; the reference zero-initialises gates,
adaLN and the final layer, which would make the outputs trivial) and the generator loads the same
tensors into the reference: change how they are drawn and run it again. The vocoder's are drawn
in the reference's parametrisation (weight_g, weight_v) and folded for ours; its anti-aliasing
filters are not handed over, each side computes its own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from studio.engines.lumina_audio import sampling
from studio.engines.lumina_audio.backbone import FlagDiTv2, FlagDiTv2Config, split_checkpoint
from studio.engines.lumina_audio.vae import MelVAEDecoder, VAEConfig
from studio.engines.lumina_audio.vocoder import BigVGAN, VocoderConfig, fold_weight_norm

GOLDEN = Path(__file__).parent / "data" / "lumina_audio_reference.json"

TINY_DIT = FlagDiTv2Config(in_channels=20, context_dim=32, hidden_size=96, depth=2, num_heads=4, max_len=1000)
TINY_VAE = VAEConfig(embed_dim=20, z_channels=20, out_ch=8, ch=32, ch_mult=(1, 2), num_res_blocks=1)
TINY_VAE_ATTN = VAEConfig(embed_dim=4, z_channels=4, out_ch=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                          attn_layers=(1,), down_layers=(0, 1), kernel_size=3)
TINY_VOCODER = VocoderConfig(num_mels=8, upsample_initial_channel=32, upsample_rates=(2, 2),
                             upsample_kernel_sizes=(4, 4), resblock="1", resblock_kernel_sizes=(3, 5),
                             resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)), activation="snakebeta",
                             snake_logscale=True)
TINY_VOCODER_2 = VocoderConfig(num_mels=8, upsample_initial_channel=24, upsample_rates=(3, 2),
                               upsample_kernel_sizes=(7, 4), resblock="2", resblock_kernel_sizes=(3,),
                               resblock_dilation_sizes=((1, 3),), activation="snake", snake_logscale=False)
# BigVGAN v1's 22 kHz base shape with a hop of 256 (Make-An-Audio's mel hop): what best_netG.pt's
# 449 MB (~112M float32 parameters) fits. The released args.yml was not read; this is an assumption.
ASSUMED_VOCODER = VocoderConfig()

DIT_CASES = {  # FlagDiTv2.forward: batch, latent frames, context tokens, integer timesteps
    "dit-forward": dict(seed=1, batch=2, frames=40, tokens=7, timesteps=[0, 731]),
    "dit-forward-1000": dict(seed=2, batch=1, frames=13, tokens=154, timesteps=[1000]),
}
SAMPLE_CASES = {  # CFM.sample_cfg / CFM.sample (cfg 1): time points, scale, frames, tokens
    "sample-cfg": dict(seed=3, steps=6, cfg=3.0, frames=24, tokens=7),
    "sample-plain": dict(seed=4, steps=4, cfg=1.0, frames=16, tokens=5),
}
GRID_STEPS = [2, 3, 10, 20, 25, 40, 50, 100, 200]  # the integer timesteps the reference's Euler hands the model
VAE_CASES = {
    "vae-decode": dict(seed=5, config=TINY_VAE, frames=10),
    "vae-decode-attn": dict(seed=6, config=TINY_VAE_ATTN, frames=6),
}
VOCODER_CASES = {
    "vocoder-amp1-snakebeta": dict(seed=7, config=TINY_VOCODER, frames=12),
    "vocoder-amp2-snake": dict(seed=8, config=TINY_VOCODER_2, frames=9),
}
CHAIN = dict(seed=9, steps=5, cfg=4.0, frames=12, tokens=6, scale_factor=0.8)


def fill(module: nn.Module, generator: torch.Generator) -> None:
    """Every parameter from `generator`, in name order: matrices scaled by their fan-in, norm weights
    and (linear-scale) snake parameters about 1, the rest (biases, gates, log-scale snakes) about 0."""
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() >= 2:
                param.copy_(noise * param[0].numel() ** -0.5)
            elif name.endswith("weight") or (name.endswith(("alpha", "beta")) and not _logscale(module)):
                param.copy_(1 + 0.3 * noise)
            else:
                param.copy_(0.3 * noise)


def _logscale(module: nn.Module) -> bool:
    config = getattr(module, "config", None)
    return bool(getattr(config, "snake_logscale", True))


def weight_normed(model: BigVGAN, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A state dict in the reference's terms: each conv's `weight_v` (random) and `weight_g` (about 1,
    a quarter for conv_post; one per slice along dim 0), the other parameters as `fill` draws them;
    no buffers."""
    fill(model, generator)
    out = {}
    convs = {name for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))}
    for name, param in sorted(model.named_parameters()):
        stem = name.rsplit(".", 1)[0]
        if stem in convs and name.endswith(".weight"):
            out[stem + ".weight_v"] = param.detach().clone()
            g = 1 + 0.3 * torch.randn(param.shape[0], generator=generator)
            if stem == "conv_post":  # a quarter of the gain: the waveform stays mostly off tanh's rails
                g = g / 4
            out[stem + ".weight_g"] = g.view(-1, *([1] * (param.dim() - 1)))
        else:
            out[name] = param.detach().clone()
    return out


def dit_case(name: str) -> dict:
    spec = dict(DIT_CASES[name])
    generator = torch.Generator().manual_seed(3000 + spec["seed"])
    model = FlagDiTv2(TINY_DIT).eval()
    fill(model, generator)
    x = torch.randn(spec["batch"], TINY_DIT.in_channels, spec["frames"], generator=generator)
    context = torch.randn(spec["batch"], spec["tokens"], TINY_DIT.context_dim, generator=generator)
    return {**spec, "model": model, "x": x, "t": torch.tensor(spec["timesteps"], dtype=torch.long),
            "context": context}


def sample_case(spec: dict) -> dict:
    generator = torch.Generator().manual_seed(3000 + spec["seed"])
    model = FlagDiTv2(TINY_DIT).eval()
    fill(model, generator)
    noise = torch.randn(1, TINY_DIT.in_channels, spec["frames"], generator=generator)
    cond = torch.randn(1, spec["tokens"], TINY_DIT.context_dim, generator=generator)
    uncond = torch.randn(1, spec["tokens"], TINY_DIT.context_dim, generator=generator)
    return {**spec, "model": model, "noise": noise, "cond": cond, "uncond": uncond}


def vae_case(name: str) -> dict:
    spec = dict(VAE_CASES[name])
    generator = torch.Generator().manual_seed(3000 + spec["seed"])
    model = MelVAEDecoder(spec["config"]).eval()
    fill(model, generator)
    z = torch.randn(1, spec["config"].embed_dim, spec["frames"], generator=generator)
    return {**spec, "model": model, "z": z}


def vocoder_case(spec: dict) -> dict:
    generator = torch.Generator().manual_seed(3000 + spec["seed"])
    model = BigVGAN(spec["config"]).eval()
    reference_state = weight_normed(model, generator)
    missing, unexpected = model.load_state_dict(fold_weight_norm(reference_state), strict=False)
    assert not unexpected and all(k.endswith(".filter") for k in missing), (missing, unexpected)
    mel = torch.randn(1, spec["config"].num_mels, spec["frames"], generator=generator)
    return {**spec, "model": model, "reference_state": reference_state, "mel": mel}


def chain_case() -> dict:
    c = sample_case(CHAIN)
    generator = torch.Generator().manual_seed(3100 + CHAIN["seed"])
    vae = MelVAEDecoder(TINY_VAE).eval()
    fill(vae, generator)
    vocoder = vocoder_case(dict(seed=CHAIN["seed"] + 100, config=TINY_VOCODER, frames=1))
    state = vocoder["reference_state"]
    state["conv_post.weight_g"] = state["conv_post.weight_g"] / 4  # the VAE's mel is louder than randn
    vocoder["model"].load_state_dict(fold_weight_norm(state), strict=False)
    return {**c, "vae": vae, "vocoder": vocoder["model"], "vocoder_state": state}


def signature(shapes: dict[str, tuple[int, ...]]) -> str:
    """sha256 of the sorted "name shape" lines."""
    text = "\n".join(f"{k} {list(v)}" for k, v in sorted(shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def meta_shapes(module_type, config) -> tuple[dict[str, tuple[int, ...]], int]:
    with torch.device("meta"):
        model = module_type(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return shapes, sum(p.numel() for p in model.parameters())


def rounded(x: torch.Tensor, digits: int = 8) -> list:
    return [float("%.*g" % (digits, v)) for v in x.reshape(-1).tolist()]


def close(ours: torch.Tensor, golden: list, shape: list, what: str, rel: float = 1e-5) -> float:
    """Agreement to float32 rounding, relative to the tensor's largest entry; returns that ratio."""
    ref = torch.tensor(golden, dtype=torch.float32).reshape(shape)
    assert list(ours.shape) == shape, what
    scale = ref.abs().max().item()
    worst = (ours - ref).abs().max().item()
    assert worst <= rel * scale, f"{what}: max |ours - reference| = {worst:.3g}, {worst / scale:.3g} of max |ref|"
    return worst / scale


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


# --- shapes -----------------------------------------------------------------------------------


def test_the_released_backbone_has_the_references_parameters(golden):
    shapes, count = meta_shapes(FlagDiTv2, FlagDiTv2Config())
    assert count == 197_940_244 and len(shapes) == 254
    entry = golden["shapes"]["FlagDiTv2"]
    assert (count, len(shapes)) == (entry["parameters"], entry["tensors"])
    assert signature(shapes) == entry["signature"]
    assert "blocks.15.attention.gate" in shapes and "cap_embedder.0.weight" in shapes


def test_the_backbone_is_found_under_its_checkpoint_prefix():
    state = {"model.diffusion_model.proj_in.bias": torch.zeros(1), "first_stage_model.decoder.conv_in.bias": 0,
             "cond_stage_model.x": 0, "scale_factor": torch.tensor(1.0)}
    assert list(split_checkpoint(state)) == ["proj_in.bias"]


def test_the_released_vae_decoder_has_the_references_parameters(golden):
    from studio.engines.lumina_audio.vae import split_checkpoint as split_vae

    shapes, count = meta_shapes(MelVAEDecoder, VAEConfig())
    assert (count, len(shapes)) == (99_333_236, 112)  # the decoder's 110 tensors and post_quant_conv's 2
    entry = golden["shapes"]["AutoencoderKL decode"]
    assert (count, len(shapes)) == (entry["parameters"], entry["tensors"])
    assert signature(shapes) == entry["signature"]
    assert not any(".attn." in k for k in shapes) and "decoder.mid.attn_1.q.weight" in shapes
    state = {"first_stage_model." + k: 0 for k in ("decoder.conv_in.weight", "post_quant_conv.bias",
                                                    "encoder.conv_in.weight", "quant_conv.weight")}
    assert sorted(split_vae(state)) == ["decoder.conv_in.weight", "post_quant_conv.bias"]


def test_an_assumed_released_vocoder_has_the_references_parameters(golden):
    shapes, count = meta_shapes(BigVGAN, ASSUMED_VOCODER)
    # The reference's 112,231,250 parameters in 784 tensors hold each conv as weight_g and weight_v.
    assert (count, len(shapes)) == (112_199_473, 668)
    entry = golden["shapes"]["BigVGAN assumed"]
    assert (count, len(shapes)) == (entry["folded parameters"], entry["tensors folded"])
    assert signature(shapes) == entry["signature folded"]


def test_a_latent_longer_than_max_len_is_refused():
    model = FlagDiTv2(FlagDiTv2Config(in_channels=4, context_dim=8, hidden_size=16, depth=1, num_heads=2, max_len=8))
    with torch.no_grad():
        assert model(torch.zeros(1, 4, 8), torch.tensor([3]), torch.zeros(1, 2, 8)).shape == (1, 4, 8)
        with pytest.raises(ValueError, match="longer than"):
            model(torch.zeros(1, 4, 9), torch.tensor([3]), torch.zeros(1, 2, 8))


def test_fold_weight_norm_is_torchs_weight_norm():
    conv = nn.utils.weight_norm(nn.ConvTranspose1d(6, 3, 4, 2))  # dim 0 of a transposed conv: its input
    with torch.no_grad():
        conv.weight_g.mul_(torch.linspace(0.5, 2, 6).view(6, 1, 1))
    folded = fold_weight_norm({k: v.detach() for k, v in conv.state_dict().items()})
    conv(torch.zeros(1, 6, 3))  # recomputes .weight from g and v
    assert sorted(folded) == ["bias", "weight"] and torch.equal(folded["weight"], conv.weight)
    with pytest.raises(KeyError):
        fold_weight_norm({"a.weight_v": torch.ones(2, 2)})


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DIT_CASES))
def test_the_backbone_is_the_references_forward(name, golden):
    c = dit_case(name)
    with torch.no_grad():
        out = c["model"](c["x"], c["t"], c["context"])
    close(out, golden[name]["out"], golden[name]["shape"], name)


def test_the_euler_grid_hands_the_model_the_references_timesteps(golden):
    for steps in GRID_STEPS:
        ours = [int(sampling.model_timesteps(t, 1)) for t, _ in sampling.euler_grid(steps)]
        assert ours == golden["timesteps"][str(steps)], steps


@pytest.mark.parametrize("name", list(SAMPLE_CASES))
def test_a_sample_is_the_references_cfm_sample(name, golden):
    c = sample_case(SAMPLE_CASES[name])
    seen = []

    def model(x, t, context):
        seen.append((x.shape[0], t.tolist()))
        return c["model"](x, t, context)

    with torch.no_grad():
        x = sampling.sample(model, c["noise"].clone(), c["cond"], c["uncond"], c["cfg"], c["steps"])
    entry = golden[name]
    assert seen == [tuple(s) for s in entry["calls"]], "the model was not called as the reference calls it"
    close(x, entry["latent"], entry["shape"], name)


@pytest.mark.parametrize("name", list(VAE_CASES))
def test_the_vae_decoder_is_the_references_decode(name, golden):
    c = vae_case(name)
    with torch.no_grad():
        mel = c["model"](c["z"])
    close(mel, golden[name]["mel"], golden[name]["shape"], name)


@pytest.mark.parametrize("name", list(VOCODER_CASES))
def test_the_vocoder_is_the_references_generator(name, golden):
    c = vocoder_case(VOCODER_CASES[name])
    with torch.no_grad():
        wav = c["model"](c["mel"])
    assert wav.shape[-1] == c["frames"] * c["config"].hop_length
    close(wav, golden[name]["wav"], golden[name]["shape"], name)


def test_a_vocoder_folder_is_read_as_vocoder_bigvgan_reads_it(golden, tmp_path):
    """args.yml (other keys too) and best_netG.pt's "generator" (weight_g/weight_v and the filters, as
    the reference's state_dict has them), loaded strictly."""
    from studio.engines.lumina_audio.vocoder import read_vocoder

    name = "vocoder-amp1-snakebeta"
    c = vocoder_case(VOCODER_CASES[name])
    config = c["config"]
    filters = {k: v for k, v in c["model"].state_dict().items() if k.endswith(".filter")}
    torch.save({"generator": {**c["reference_state"], **filters}}, tmp_path / "best_netG.pt")
    (tmp_path / "args.yml").write_text(
        "resblock: '1'\nnum_gpus: 0\nbatch_size: 32\nlearning_rate: 0.0001\n"
        f"upsample_rates: {list(config.upsample_rates)}\n"
        f"upsample_kernel_sizes: {list(config.upsample_kernel_sizes)}\nupsample_initial_channel: "
        f"{config.upsample_initial_channel}\nresblock_kernel_sizes: {list(config.resblock_kernel_sizes)}\n"
        f"resblock_dilation_sizes: {[list(d) for d in config.resblock_dilation_sizes]}\nactivation: snakebeta\n"
        f"snake_logscale: true\nnum_mels: {config.num_mels}\nsampling_rate: 16000\nsegment_size: 8192\n")
    vocoder = read_vocoder(tmp_path)
    assert vocoder.config == config.__class__(**{**config.__dict__, "sampling_rate": 16000})
    assert vocoder.config.extra["segment_size"] == 8192 and not vocoder.training
    with torch.no_grad():
        close(vocoder(c["mel"]), golden[name]["wav"], golden[name]["shape"], f"{name} from its folder")


def test_latent_to_waveform_is_the_references(golden):
    c = chain_case()
    entry = golden["chain"]
    with torch.no_grad():
        latent = sampling.sample(c["model"], c["noise"].clone(), c["cond"], c["uncond"], c["cfg"], c["steps"])
        mel = c["vae"](sampling.unscale(latent, torch.tensor(CHAIN["scale_factor"])))
        wav = c["vocoder"](mel)
    close(latent, entry["latent"], entry["latent shape"], "chain latent")
    close(mel, entry["mel"], entry["mel shape"], "chain mel")
    close(wav, entry["wav"], entry["wav shape"], "chain waveform")
