"""The tiny built-in Lumina-T2Audio/T2Music (studio/zoo/builtin_lumina_audio.py) in the official
layout, loaded through the engine's own readers (checkpoint.py, text.py, vocoder.read_vocoder) and
run from noise to a waveform: text -> CFM Euler with guidance -> 1/scale_factor -> VAE -> BigVGAN."""

from __future__ import annotations

import pytest
import torch

from studio.engines.lumina_audio import checkpoint, sampling, text
from studio.engines.lumina_audio.vocoder import read_vocoder
from studio.zoo import builtin_lumina_audio as tiny


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for kind, build in (("audio", tiny.build_tiny_lumina_audio), ("music", tiny.build_tiny_lumina_music)):
        folder = tmp_path_factory.mktemp(kind)
        build().save_pretrained(folder)
        out[kind] = folder
    return out


def test_official_layout(folders):
    names = {kind: sorted(str(p.relative_to(f)) for p in f.rglob("*") if p.is_file()) for kind, f in folders.items()}
    assert names["audio"] == ["audio_generation/0.ckpt", "bigvgan/args.yml", "bigvgan/best_netG.pt"]
    assert names["music"] == ["bigvnat/args.yml", "bigvnat/best_netG.pt", "music_generation/0.ckpt"]
    ckpt_path = folders["audio"] / tiny.AUDIO_CKPT
    # numpy scalars in it, as in a real Lightning file: read only with the numpy globals allowed
    assert "numpy._core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(ckpt_path)
    generator = torch.load(folders["audio"] / "bigvgan/best_netG.pt", weights_only=True)["generator"]
    assert "conv_pre.weight_g" in generator and "conv_pre.weight" not in generator


def _run(folder, ckpt_name, vocoder_dir, conds):
    dit_config, vae_config = tiny.tiny_configs()
    ckpt = checkpoint.read_checkpoint(folder / ckpt_name, "tiny")
    assert ckpt.scale_factor == tiny.SCALE_FACTOR and ckpt.unused == []
    dit = checkpoint.build_backbone(ckpt, dit_config)
    decoder = checkpoint.build_vae_decoder(ckpt, vae_config)
    vocoder = read_vocoder(folder / vocoder_dir)
    cond, uncond = conds(ckpt)
    noise = torch.randn(1, dit_config.in_channels, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latent = sampling.sample(dit, noise, cond, uncond, cfg_scale=3.0, steps=6)
        mel = decoder(sampling.unscale(latent, ckpt.scale_factor))
        wav = vocoder(mel)
    assert mel.shape == (1, 8, 48) and wav.shape == (1, 1, 48 * vocoder.config.hop_length)
    assert torch.isfinite(wav).all() and wav.std() > 1e-4
    return latent, wav


def test_tiny_audio_runs_end_to_end(folders):
    bert_tok, t5_tok = tiny.tiny_tokenizers()

    def conds(ckpt):
        enc = text.AudioTextEncoder.from_checkpoint(ckpt.text, bert_tok, t5_tok)
        cap = "A dog barks in the rain"
        cond = enc.encode([cap], [text.struct_caption(cap, "<dog barking& start>@<rain& all>")])
        assert cond.shape == (1, 154, tiny.CONTEXT)
        return cond, enc.unconditional()

    latent, _ = _run(folders["audio"], tiny.AUDIO_CKPT, tiny.AUDIO_VOCODER, conds)

    def other(ckpt):  # another prompt moves the latent: the text reaches the DiT
        enc = text.AudioTextEncoder.from_checkpoint(ckpt.text, bert_tok, t5_tok)
        return enc.encode(["Birds sing"], [text.fallback_struct_caption("Birds sing")]), enc.unconditional()

    latent2, _ = _run(folders["audio"], tiny.AUDIO_CKPT, tiny.AUDIO_VOCODER, other)
    assert (latent - latent2).abs().max() > 1e-3


def test_tiny_music_runs_end_to_end(folders):
    _, t5_tok = tiny.tiny_tokenizers()

    def conds(ckpt):
        enc = text.MusicTextEncoder.from_checkpoint(ckpt.text, t5_tok)
        return enc.encode(["calm piano"]), enc.encode([""])

    _run(folders["music"], tiny.MUSIC_CKPT, tiny.MUSIC_VOCODER, conds)


def test_wrong_config_is_refused(folders):
    from studio.engines.lumina_audio.backbone import FlagDiTv2Config
    from studio.errors import ModelNotAvailable

    ckpt = checkpoint.read_checkpoint(folders["audio"] / tiny.AUDIO_CKPT, "tiny")
    with pytest.raises(ModelNotAvailable, match=r"DiT \(model.diffusion_model.\*\) does not fit"):
        checkpoint.build_backbone(ckpt, FlagDiTv2Config())  # the released shape


def test_vocoder_folder_refusals(folders, tmp_path):
    import shutil

    import yaml

    from studio.errors import ModelNotAvailable

    folder = tmp_path / "bigvgan"
    shutil.copytree(folders["audio"] / tiny.AUDIO_VOCODER, folder)
    args = yaml.safe_load((folder / "args.yml").read_text())
    (folder / "args.yml").write_text(yaml.safe_dump({**args, "upsample_initial_channel": 32}))
    with pytest.raises(ModelNotAvailable, match="best_netG.pt does not fit its args.yml"):
        read_vocoder(folder, title="tiny")
    (folder / "args.yml").write_text(yaml.safe_dump({**args, "activation": "relu"}))
    with pytest.raises(ModelNotAvailable, match="args.yml is not a BigVGAN config"):
        read_vocoder(folder, title="tiny")
    (folder / "args.yml").write_text(yaml.safe_dump(args))
    (folder / "best_netG.pt").write_text("version https://git-lfs.github.com/spec/v1\nsize 449000000\n")
    with pytest.raises(ModelNotAvailable, match="Git LFS pointer"):
        read_vocoder(folder, title="tiny")
    (folder / "args.yml").unlink()
    with pytest.raises(ModelNotAvailable, match="args.yml is not in the model cache"):
        read_vocoder(folder, title="tiny")
