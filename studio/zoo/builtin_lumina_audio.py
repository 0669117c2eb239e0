"""Built-in tiny Lumina-T2Audio and Lumina-T2Music, saved in the official release's layout.

Alpha-VLLM/Lumina-T2Audio holds `audio_generation/324.ckpt` (a PyTorch Lightning checkpoint:
`{"state_dict": {model.diffusion_model.*, first_stage_model.*, cond_stage_model.*, scale_factor},
"epoch", "global_step", ...}` with numpy scalars among the counters) and `bigvgan/{best_netG.pt,
args.yml}` (the vocoder: `{"generator": state dict}` with weight_norm's weight_g/weight_v, and its
arguments). Lumina-T2Music has `music_generation/*.ckpt` and the vocoder folder named `bigvnat`.
The tiny ones are written in those forms with seeded random weights, so they load through
engines/lumina_audio/checkpoint.py, text.py and vocoder.py as a download does. The DiT's and the
VAE's shapes are not in the files (the reference reads them from its yaml): they are TINY_DIT and
TINY_VAE here, as the released ones are the configs' defaults. The text encoders' weights are in
the .ckpt; their tokenizers are tiny_parts' (`tiny_tokenizers`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .builtin_llamagen import FileSet
from .tiny_parts import SEED

AUDIO_CKPT = "audio_generation/0.ckpt"
MUSIC_CKPT = "music_generation/0.ckpt"
AUDIO_VOCODER = "bigvgan"
MUSIC_VOCODER = "bigvnat"  # sic: the T2Music repo's folder name
CONTEXT = 16  # the text features' width (1024 released)
SCALE_FACTOR = 0.75

# args.yml as BigVGAN's training writes it (shape keys plus a few training ones).
TINY_VOCODER_ARGS: dict[str, Any] = {
    "num_mels": 8, "upsample_initial_channel": 16, "upsample_rates": [2, 2], "upsample_kernel_sizes": [4, 4],
    "resblock": "1", "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
    "activation": "snakebeta", "snake_logscale": True, "sampling_rate": 16000, "n_fft": 16, "hop_size": 4,
    "win_size": 16, "fmin": 0, "fmax": 8000, "batch_size": 4, "learning_rate": 0.0001, "adam_b1": 0.8,
}


def tiny_configs():
    """(FlagDiTv2Config, VAEConfig) of the tiny models."""
    from ..engines.lumina_audio.backbone import FlagDiTv2Config
    from ..engines.lumina_audio.vae import VAEConfig

    return (FlagDiTv2Config(in_channels=4, context_dim=CONTEXT, hidden_size=32, depth=2, num_heads=4, max_len=1000),
            VAEConfig(embed_dim=4, z_channels=4, out_ch=TINY_VOCODER_ARGS["num_mels"], ch=32, ch_mult=(1, 2),
                      num_res_blocks=1, attn_layers=(3,), down_layers=(0,), kernel_size=5))


def tiny_tokenizers():
    """(bert-base-uncased-like, T5-like) tokenizers for the tiny text encoders."""
    from .tiny_parts import tiny_bert_tokenizer, tiny_t5_tokenizer

    return tiny_bert_tokenizer(), tiny_t5_tokenizer()


def _seed(module, seed: int, std: float = 0.2):
    """Random weights everywhere (the reference zero-starts gates, adaLN and the final layer; an
    untrained model would be flat), norms' scales around one."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_scale = p.dim() == 1 and ("norm" in name.lower() or "layer_norm" in name) and name.endswith("weight")
            p.copy_(1 + 0.1 * noise if is_scale else std * noise)
    return module


def _prefixed(prefix: str, module) -> dict:
    return {prefix + k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def _t5(vocab: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    return _seed(T5EncoderModel(T5Config(vocab_size=vocab, d_model=CONTEXT, d_ff=32, d_kv=8, num_heads=2,
                                         num_layers=1, feed_forward_proj="gated-gelu", is_encoder_decoder=False)),
                 seed, 0.3)


def _text_state(music: bool) -> dict:
    from transformers import BertConfig, BertModel

    from ..engines.lumina_audio.text import Projection

    bert_tok, t5_tok = tiny_tokenizers()
    if music:
        return _prefixed("cond_stage_model.transformer.", _t5(len(t5_tok), SEED + 43))
    bert = _seed(BertModel(BertConfig(vocab_size=len(bert_tok), hidden_size=64, num_hidden_layers=1,
                                      num_attention_heads=1, intermediate_size=64, max_position_embeddings=80)),
                 SEED + 40)
    return {**_prefixed("cond_stage_model.caption_encoder.base.", bert),
            **_prefixed("cond_stage_model.caption_encoder.projection.", _seed(Projection(64, CONTEXT), SEED + 41)),
            **_prefixed("cond_stage_model.t5_transformer.", _t5(len(t5_tok), SEED + 42))}


def _lightning_checkpoint(music: bool) -> dict:
    import numpy as np
    import torch

    from ..engines.lumina_audio.backbone import FlagDiTv2
    from ..engines.lumina_audio.vae import MelVAEDecoder

    dit_config, vae_config = tiny_configs()
    dit = _seed(FlagDiTv2(dit_config), SEED + 44 + music, 0.3)
    decoder = _seed(MelVAEDecoder(vae_config), SEED + 46, 0.1)
    state = {**_prefixed("model.diffusion_model.", dit), **_prefixed("first_stage_model.", decoder),
             **_text_state(music), "scale_factor": torch.tensor(SCALE_FACTOR)}
    # The rest of a Lightning file (the encoder half of the VAE is left out: inference never uses it).
    return {"epoch": 0, "global_step": np.int64(0), "pytorch-lightning_version": "1.7.7", "state_dict": state,
            "optimizer_states": [], "lr_schedulers": [{"last_epoch": np.int64(0), "base_lrs": [np.float64(1e-4)]}],
            "callbacks": {}}


def _vocoder_generator() -> dict:
    """best_netG.pt's "generator": every conv's weight as weight_norm's (weight_g, weight_v)."""
    import torch

    from ..engines.lumina_audio.vocoder import BigVGAN, VocoderConfig

    # 0.15: a waveform of std ~0.3 that stays off tanh's rails (0.3 put 98% of the samples on them).
    model = _seed(BigVGAN(VocoderConfig.from_args(TINY_VOCODER_ARGS)), SEED + 47, 0.15)
    convs = {name for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))}
    out = {}
    for key, value in model.state_dict().items():
        stem = key.rpartition(".")[0]
        if stem in convs and key.endswith(".weight"):
            out[stem + ".weight_g"] = torch.linalg.vector_norm(value, dim=tuple(range(1, value.dim())), keepdim=True)
            out[stem + ".weight_v"] = value.clone()
        else:
            out[key] = value.clone()
    return out


def _writer(make):
    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
    return write


def _fileset(ckpt_name: str, vocoder: str, music: bool) -> FileSet:
    import torch
    import yaml

    return FileSet({
        ckpt_name: _writer(lambda p: torch.save(_lightning_checkpoint(music), p)),
        f"{vocoder}/best_netG.pt": _writer(lambda p: torch.save({"generator": _vocoder_generator(), "steps": 0}, p)),
        f"{vocoder}/args.yml": _writer(lambda p: p.write_text(yaml.safe_dump(TINY_VOCODER_ARGS, sort_keys=False))),
    })


def build_tiny_lumina_audio() -> FileSet:
    return _fileset(AUDIO_CKPT, AUDIO_VOCODER, music=False)


def build_tiny_lumina_music() -> FileSet:
    return _fileset(MUSIC_CKPT, MUSIC_VOCODER, music=True)


class _TokenizerFolder:
    """A tokenizer component: its files as transformers saves them (tokenizer.json, tokenizer_config.json ...)."""

    def __init__(self, make) -> None:
        self.make = make

    def save_pretrained(self, save_directory: str | Path, **_: Any) -> None:
        self.make().save_pretrained(str(save_directory))


def build_tiny_bert_tokenizer() -> _TokenizerFolder:
    """The tiny CLAP-BERT's tokenizer, a component card as bert-base-uncased's is."""
    return _TokenizerFolder(lambda: tiny_tokenizers()[0])


def build_tiny_t5_tokenizer() -> _TokenizerFolder:
    """The tiny T5's tokenizer (both tiny models), a component card as t5-v1_1-large's / flan-t5-large's are."""
    return _TokenizerFolder(lambda: tiny_tokenizers()[1])
