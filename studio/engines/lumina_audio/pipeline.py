"""Lumina-T2Audio and Lumina-T2Music as one pipeline, run as demo_audio.py / demo_music.py run them.

1. Text (text.py): T2Audio, CLAP's BERT + projection on the prompt and T5 on the structured caption
   (the user's "sound events", or the reference's own fallback `<prompt, all>`), concatenated;
   T2Music, FLAN-T5 on the prompt. 77 tokens each, no attention mask, once per job.
2. **The unconditional input is the empty prompt for both models** (for T2Audio `("", "")`, the
   audio demo's `uc`). This differs on purpose from demo_music.py, whose `uc` is built from a dict
   the T5 tokenizer rejects, so its `except` path sets `uc = c` and guidance `uc + s (c - uc)` is
   the unguided prediction whatever the scale: here the CFG scale does something for T2Music too.
3. Noise: float32 normal noise of (channels, latent_length), 20 x 312 for the released models
   (the demos' `randn(1, 20, 312)`), one CPU generator per waveform seeded from the job's seed, so
   the same seed makes the same samples on any device (the demos never seed at all). Each waveform
   is sampled alone (a batch of one CFG pair, as the demos), so waveform k of a job is bit for bit
   what seed + k makes alone.
4. Flow (sampling.py): steps time points over linspace(0, 1, steps), steps - 1 Euler steps, integer
   timesteps `(t * 1000).long()`, CFG on the [uncond; cond] batch; a scale of 1 is the unguided call.
5. Decode: `latent / scale_factor` through the mel VAE's decoder (the main checkpoint's
   `first_stage_model.*`: see options.py for maa2.ckpt), then BigVGAN, each waveform alone.

The text encoders, the VAE and the vocoder run in float32 whatever the card's dtype (T5 overflows in
float16; the demos map fp32 only); the DiT takes the card's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...errors import InvalidInput, ModelNotAvailable
from ..bundle import ModuleBundle
from . import sampling
from .backbone import FlagDiTv2Config
from .checkpoint import build_backbone, build_vae_decoder, read_checkpoint
from .options import ModelFiles, engine_options
from .text import AudioTextEncoder, MusicTextEncoder, struct_caption
from .vae import VAEConfig
from .vocoder import read_vocoder

DEFAULT_SAMPLE_RATE = 16000  # both demos' --sample_rate (choices=[16000])


@dataclass(frozen=True)
class AudioOptions:
    """How to sample; the defaults a user gets are the family's (studio.families.lumina_audio)."""

    steps: int
    cfg: float
    sound_events: str = ""  # T2Audio's structured caption; empty: the reference's fallback


@dataclass
class AudioResult:
    waveforms: list[np.ndarray]  # (1, samples) float32 each
    sample_rate: int
    struct_caption: str | None  # what T2Audio's T5 read
    solver_steps: int


class LuminaAudioPipeline(ModuleBundle):
    """Components in the order they run (text encoders, DiT, VAE decoder, vocoder), for chained
    model offload: each moves to the device when its forward starts and the one before leaves."""

    def __init__(self, *, text: dict[str, Any], transformer: nn.Module, vae: nn.Module, vocoder: nn.Module,
                 scale_factor: float, latent_length: int, music: bool) -> None:
        super().__init__(**text, transformer=transformer, vae=vae, vocoder=vocoder)
        self.scale_factor = scale_factor
        self.latent_length = latent_length
        self.music = music

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.config.sampling_rate or DEFAULT_SAMPLE_RATE)

    @property
    def samples_per_clip(self) -> int:
        return self.latent_length * self.vae.time_upsampling * self.vocoder.config.hop_length

    @property
    def seconds(self) -> float:
        return self.samples_per_clip / self.sample_rate

    def text_encoder(self) -> AudioTextEncoder | MusicTextEncoder:
        if self.music:
            return MusicTextEncoder(t5=self.t5, tokenizer=self.t5_tokenizer)
        return AudioTextEncoder(bert=self.bert, projection=self.projection, t5=self.t5,
                                bert_tokenizer=self.bert_tokenizer, t5_tokenizer=self.t5_tokenizer)

    @torch.no_grad()
    def encode(self, prompt: str, sound_events: str = "") -> tuple[torch.Tensor, torch.Tensor, str | None]:
        """(cond (1, N, C), uncond (1, N, C), the structured caption T5 read or None for T2Music).
        The unconditional input is the empty prompt (and empty structured caption) for both."""
        encoder = self.text_encoder()
        if self.music:
            feats = encoder.encode([prompt, ""])
            return feats[:1], feats[1:], None
        struct = struct_caption(prompt, sound_events)
        feats = encoder.encode([prompt, ""], [struct, ""])
        return feats[:1], feats[1:], struct

    def noise(self, generators: list[torch.Generator]) -> torch.Tensor:
        shape = (self.transformer.config.in_channels, self.latent_length)
        return torch.stack([torch.randn(shape, generator=g) for g in generators])

    @torch.no_grad()
    def __call__(self, *, prompt: str, opts: AudioOptions, generators: list[torch.Generator],
                 on_step: Callable[[int, int], None] | None = None) -> AudioResult:
        """One waveform per generator; on_step(Euler steps done, (steps - 1) x waveforms)."""
        if opts.steps < 2:
            raise InvalidInput(f"steps: Lumina needs at least 2 time points (got {opts.steps}); N time points "
                               "are N - 1 Euler steps")
        if self.music and opts.sound_events.strip():
            raise InvalidInput("Lumina-T2Music reads the prompt only: it takes no sound events")
        count = len(generators)
        try:
            cond, uncond, struct = self.encode(prompt, opts.sound_events)
            dtype = next(self.transformer.parameters()).dtype
            device = self.device
            cond, uncond = cond.to(device, dtype), uncond.to(device, dtype)
            noise = self.noise(generators).to(device, dtype)
            per_clip = opts.steps - 1
            # One waveform at a time, sampled and decoded: waveform k is bit for bit what its seed makes
            # alone (a batched DiT rounds differently, and the flow amplifies that), and less memory.
            waves = []
            for i in range(count):
                def hook(done: int, _total: int, _x: torch.Tensor, i: int = i) -> None:
                    if on_step is not None:
                        on_step(i * per_clip + done, count * per_clip)

                latent = sampling.sample(self.transformer, noise[i:i + 1], cond, uncond, cfg_scale=opts.cfg,
                                         steps=opts.steps, on_step=hook)
                mel = self.vae(sampling.unscale(latent.float(), self.scale_factor))
                waves.append(self.vocoder(mel.float()).float().reshape(1, -1).cpu().numpy())
        finally:
            self.offload_all()
        return AudioResult(waveforms=waves, sample_rate=self.sample_rate, struct_caption=struct,
                           solver_steps=opts.steps - 1)


def _config(cls: type, values: dict[str, Any]) -> Any:
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def read_tokenizer(folder: Any, title: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # no files, a vocabulary it cannot convert (a SentencePiece model without sentencepiece)
        raise ModelNotAvailable(f"the tokenizer of {title} could not be read from {folder}: "
                                f"{type(err).__name__}: {str(err)[:300]}") from None


def load_lumina_audio(card: Any, folder: Any, required: dict[str, Any], dtype: torch.dtype) -> LuminaAudioPipeline:
    files = engine_options(card)
    if not isinstance(files, ModelFiles):
        raise ModelNotAvailable(f"{card.title} is a component: it runs as part of Lumina-T2Audio / T2Music")
    music = "music" in card.tasks
    ckpt = read_checkpoint(folder / files.checkpoint, card.title)
    transformer = build_backbone(ckpt, _config(FlagDiTv2Config, files.dit), dtype)
    vae = build_vae_decoder(ckpt, _config(VAEConfig, files.vae), torch.float32)
    vocoder = read_vocoder(folder / files.vocoder, title=card.title)
    if vocoder.config.num_mels != vae.config.out_ch:
        raise ModelNotAvailable(f"{files.vocoder}/args.yml wants {vocoder.config.num_mels} mel bins; "
                                f"the VAE makes {vae.config.out_ch}")
    t5_tokenizer = read_tokenizer(required[files.t5_tokenizer], files.t5_tokenizer)
    if music:
        encoder = MusicTextEncoder.from_checkpoint(ckpt.text, t5_tokenizer)
        text = {"t5": encoder.t5, "t5_tokenizer": t5_tokenizer}
        width = encoder.t5.config.d_model
    else:
        bert_tokenizer = read_tokenizer(required[files.bert_tokenizer], files.bert_tokenizer)
        audio = AudioTextEncoder.from_checkpoint(ckpt.text, bert_tokenizer, t5_tokenizer)
        text = {"bert": audio.bert, "projection": audio.projection, "t5": audio.t5,
                "bert_tokenizer": bert_tokenizer, "t5_tokenizer": t5_tokenizer}
        width = audio.t5.config.d_model
    if width != transformer.config.context_dim:
        raise ModelNotAvailable(f"{card.title}'s text features are {width} wide; its DiT reads "
                                f"{transformer.config.context_dim}")
    pipe = LuminaAudioPipeline(text=text, transformer=transformer, vae=vae, vocoder=vocoder,
                               scale_factor=ckpt.scale_factor, latent_length=files.latent_length, music=music)
    seconds = card.defaults.get("seconds")
    if seconds is not None and not math.isclose(pipe.seconds, float(seconds), abs_tol=1e-3):
        raise ModelNotAvailable(f"{card.title} makes {pipe.seconds:g} s clips, not the {float(seconds):g} s "
                                "its card says: fix the card's seconds or latent_length")
    return pipe


__all__ = ["AudioOptions", "AudioResult", "LuminaAudioPipeline", "load_lumina_audio"]
