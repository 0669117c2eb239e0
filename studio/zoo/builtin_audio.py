"""Built-in tiny audio and music models of the real architectures, for offline use and tests.

The audio counterpart of `studio.zoo.builtin`: each builder returns an unsaved model of the real
classes with tiny configs, seeded random weights and tokenizers built in-process, ready for
`save_pretrained(path, safe_serialization=True)`; once saved it loads through the same
`from_pretrained` call as a downloaded checkpoint.

- tiny-stable-audio: `StableAudioPipeline` (Stable Audio Open layout), 44.1 kHz stereo, up to ~11.9 s.
- tiny-audioldm2: `AudioLDM2Pipeline` (cvssp/audioldm2 layout), 16 kHz mono, 10.24 s by default.
- tiny-musicgen: `MusicgenForConditionalGeneration` + `MusicgenProcessor` (facebook/musicgen-small
  layout), 32 kHz mono, 4 codebooks at 50 frames/s.
- tiny-musicgen-melody: `MusicgenMelodyForConditionalGeneration`, its T5 tokenizer and the feature
  extractor's `preprocessor_config.json` (facebook/musicgen-melody layout): the same parts, plus a
  12-bin chroma melody input.

Weights are random, so the audio is noise. A few initial values differ from what the classes set
on their own, because those values are only placeholders for a checkpoint to overwrite: zero
codebooks, init scales so small that a fresh model ignores its prompt or outputs near-silence. Each
change is commented where it is made. Without them two prompts would give the same clip, and a
test could not tell whether the prompt reached the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tiny_parts import SEED, tiny_t5_tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import (MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration,
                              MusicgenProcessor)


def tiny_roberta_tokenizer(model_max_length: int = 77):
    """A RoBERTa-style tokenizer (byte-level BPE, `<s> ... </s>`), as CLAP's text branch uses.

    No merges, and the vocabulary is the specials plus the 256 byte-level symbols, so any text
    (multilingual, emoji) encodes one token per UTF-8 byte. Ids follow RoBERTa: <s>=0, <pad>=1, </s>=2, <unk>=3.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import RobertaTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    tok.decoder = decoders.ByteLevel()
    return RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                model_max_length=model_max_length)


def _t5_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def _fan_in_normal_(weight: torch.Tensor, fan_in: float, gain: float = 1.0) -> None:
    """Redraw `weight` from N(0, gain^2 / fan_in), which keeps a signal's scale through a layer."""
    import torch

    with torch.no_grad():
        weight.normal_(0.0, gain / math.sqrt(fan_in))


def _eval(*modules) -> None:
    # A freshly constructed model is in training mode. CLAP and GPT-2 dropout would then make two
    # runs with the same seed differ, until the model is saved and reloaded (from_pretrained calls eval()).
    for module in modules:
        module.eval()


def build_tiny_stable_audio():
    """Stable Audio Open: DiT + stereo Oobleck VAE (44.1 kHz) + T5 + seconds-start/end conditioners."""
    import torch
    from diffusers import (AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel,
                           StableAudioPipeline)
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    tokenizer = tiny_t5_tokenizer()
    # Stable Audio's T5 conditioner reads at most 128 tokens. The pipeline pads every prompt to this
    # length, and the DiT's cross-attention has no mask, so it sets how far the text is diluted.
    tokenizer.model_max_length = 128
    torch.manual_seed(SEED)
    text_encoder = _t5_encoder(len(tokenizer))
    torch.manual_seed(SEED + 1)
    # Real: T5-base (768) projected to 768, seconds conditioned on 0-512.
    projection_model = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=32, min_value=0, max_value=512)
    torch.manual_seed(SEED + 2)
    transformer = StableAudioDiTModel(
        # The latent is always sample_size frames long. The pipeline decodes all of it and then crops
        # to the request, so the maximum length is sample_size * hop / rate = 256 * 2048 / 44100 ≈ 11.9 s
        # (the real model: 1024 frames ≈ 47.6 s). Every request pays for the full 11.9 s decode.
        sample_size=256,
        in_channels=8,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=4,
        num_key_value_attention_heads=2,
        out_channels=8,
        cross_attention_dim=32,
        time_proj_dim=32,
        global_states_input_dim=64,  # seconds_start + seconds_end embeddings, 2 x conditioning_dim
        cross_attention_input_dim=32,
    )
    # PyTorch's default Linear init gives a weight variance of 1/(3 fan_in), so every layer shrinks its
    # input. Along text -> cross_attention_proj -> attn2 that shrinking leaves a fresh tiny DiT almost
    # deaf to its prompt. Drawing these weights at 1/fan_in instead lets two prompts give clearly
    # different audio.
    torch.manual_seed(SEED + 3)
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and ("attn2" in name or "cross_attention_proj" in name):
            _fan_in_normal_(module.weight, module.in_features)
    torch.manual_seed(SEED + 4)
    vae = AutoencoderOobleck(
        encoder_hidden_size=16,  # mean + scale of an 8-channel latent
        downsampling_ratios=[2, 4, 4, 8, 8],  # the real hop, 2048 samples per latent frame
        channel_multiples=[1, 2, 2, 4, 4],
        decoder_channels=4,
        decoder_input_channels=8,
        audio_channels=2,
        sampling_rate=44100,
    )
    # A random Oobleck decoder has about 35 weight-normed convs. At their default scale the latent's
    # signal dies out on the way, and a constant from the Snake activations is left: every seed and
    # prompt gives the same near-DC waveform. Raise the gain of the 6 upsampling-path convs (not the
    # residual units, where the growth would compound) so the latent is heard. Then scale the output
    # conv down to keep the waveform mostly within [-1, 1].
    with torch.no_grad():
        vae.decoder.conv1.weight_g.mul_(2.0)
        for block in vae.decoder.block:
            block.conv_t1.weight_g.mul_(2.0)
        vae.decoder.conv2.weight_g.mul_(0.3)
    # The scheduler settings from stabilityai/stable-audio-open-1.0.
    scheduler = CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0, sigma_data=1.0,
                                                  sigma_schedule="exponential", solver_order=2,
                                                  prediction_type="v_prediction", rho=7.0, final_sigmas_type="zero")
    _eval(text_encoder, projection_model, transformer, vae)
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection_model,
                               tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)


def build_tiny_audioldm2():
    """AudioLDM 2: CLAP + Flan-T5 -> projection -> GPT-2 -> 2-context UNet -> mel VAE -> HiFi-GAN (16 kHz)."""
    import torch
    from diffusers import (AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel,
                           AutoencoderKL, DDIMScheduler)
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config, GPT2LMHeadModel,
                              SpeechT5HifiGan, SpeechT5HifiGanConfig)

    tokenizer = tiny_roberta_tokenizer(model_max_length=77)
    tokenizer_2 = tiny_t5_tokenizer()
    tokenizer_2.model_max_length = 128  # AudioLDM 2's Flan-T5 limit (hard-coded in the original implementation)
    torch.manual_seed(SEED)
    text_encoder = ClapModel(ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=2,
                         num_hidden_layers=2, projection_dim=32, layer_norm_eps=1e-5,
                         # RoBERTa positions start after the pad id, hence the + 2.
                         max_position_embeddings=tokenizer.model_max_length + 2),
        # The HTSAT audio branch runs only to rank several waveforms per prompt against the text (needs
        # librosa). 64 mel bins as in CLAP, with spec_size 128: up to 256 mel frames fit.
        audio_config=dict(spec_size=128, window_size=8, num_mel_bins=64, patch_size=4, patch_stride=4,
                          depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16,
                          hidden_size=32, intermediate_size=64, projection_dim=32),
        projection_dim=32,
    ))
    # laion/clap-htsat-unfused settings (48 kHz, 64 mels, rand_trunc), except a hop of 1920 instead of 480,
    # so that 10 s makes 251 frames, which fit the tiny spec_size.
    feature_extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=1920, max_length_s=10,
                                             fft_window_size=1024, truncation="rand_trunc", padding="repeatpad")
    torch.manual_seed(SEED + 1)
    text_encoder_2 = _t5_encoder(len(tokenizer_2))
    torch.manual_seed(SEED + 2)
    # The pipeline steps the LM itself with GenerationMixin helpers, so the LM-head class (its hidden
    # states are the same as GPT2Model's). It only reads input embeddings, never token ids.
    language_model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2,
                                                n_positions=256, bos_token_id=0, eos_token_id=2))
    language_model.config.max_new_tokens = 8  # as in cvssp/audioldm2
    torch.manual_seed(SEED + 3)
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=32, text_encoder_1_dim=32, langauge_model_dim=32)
    torch.manual_seed(SEED + 4)
    unet = AudioLDM2UNet2DConditionModel(
        # 256 latent frames x 4 (VAE) x 160 samples per mel frame / 16 kHz = the real default 10.24 s.
        sample_size=256,
        in_channels=8,
        out_channels=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        # Each attention block attends to the GPT-2 output and, in its own layer, to the T5 embeddings.
        cross_attention_dim=([None, 32, 32], [None, 32, 32]),
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(SEED + 5)
    vae = AutoencoderKL(  # mono mel "image", 4x downsampling, 8 latent channels: the real layout
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[8, 16, 16],
        layers_per_block=1,
        latent_channels=8,
        norm_num_groups=8,
        sample_size=256,
    )
    torch.manual_seed(SEED + 6)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=16,  # mel bins (real: 64); must be a multiple of the VAE's factor 4
        sampling_rate=16000,
        upsample_initial_channel=64,
        upsample_rates=[5, 4, 2, 2, 2],  # the real hop: 160 samples per mel frame
        upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3, 5]],
        normalize_before=False,
    ))
    # transformers initialises HiFi-GAN convs at std 0.01 (placeholders for a checkpoint), which over
    # ~20 convs makes a fresh vocoder output ~1e-10: silence once written as 16-bit PCM. Draw them at
    # 1/fan_in instead (for a transposed conv, each output sees in_channels * kernel / stride inputs).
    torch.manual_seed(SEED + 7)
    with torch.no_grad():
        for module in vocoder.modules():
            if isinstance(module, torch.nn.ConvTranspose1d):
                _fan_in_normal_(module.weight, module.in_channels * module.kernel_size[0] / module.stride[0])
                module.bias.zero_()
            elif isinstance(module, torch.nn.Conv1d):
                _fan_in_normal_(module.weight, module.in_channels * module.kernel_size[0])
                module.bias.zero_()
    # cvssp/audioldm2's scheduler: DDIM over the original linear_start/linear_end betas, epsilon prediction.
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", steps_offset=1, clip_sample=False,
                              set_alpha_to_one=False, prediction_type="epsilon")
    _eval(text_encoder, text_encoder_2, language_model, projection_model, unet, vae, vocoder)
    return AudioLDM2Pipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                             projection_model=projection_model, language_model=language_model,
                             tokenizer=tokenizer, tokenizer_2=tokenizer_2, feature_extractor=feature_extractor,
                             unet=unet, scheduler=scheduler, vocoder=vocoder)


@dataclass
class TinyMusicgen:
    """A MusicGen model and its processor, saved together the way facebook/musicgen-* repos are laid out."""

    model: MusicgenForConditionalGeneration
    processor: MusicgenProcessor

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        self.processor.save_pretrained(save_directory)


# 512 codes (9 bits) at the real 2.2 kbps give exactly 4 quantizers, one per decoder codebook,
# under both ways transformers has counted them: 1000 * bw // (frame_rate * log2(codebook_size))
# = 2200 // 450 (5.x), and 1000 * bw // (frame_rate * 10) = 2200 // 500 (4.x). Real: 2048 codes, 4.
# More quantizers than codebooks would break audio-prompted generation; fewer breaks decoding.
MUSICGEN_CODEBOOK_SIZE = 512


def _musicgen_sub_configs(tokenizer, decoder_config_class) -> dict:
    """The text encoder, EnCodec and decoder configs of a tiny MusicGen (plain or melody), as dicts
    (each with its model_type): the form every transformers version accepts."""
    from transformers import EncodecConfig, T5Config

    codebook_size = MUSICGEN_CODEBOOK_SIZE
    return dict(
        text_encoder=T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                              pad_token_id=0, eos_token_id=1, decoder_start_token_id=0).to_dict(),
        audio_encoder=EncodecConfig(
            sampling_rate=32000,
            upsampling_ratios=[8, 5, 4, 4],  # hop 640: 50 frames/s, as facebook/encodec_32khz
            target_bandwidths=[2.2],
            codebook_size=codebook_size,
            codebook_dim=16,
            num_filters=4,
            hidden_size=16,
            num_lstm_layers=1,
            num_residual_layers=1,
            audio_channels=1,
            normalize=False,
            use_causal_conv=False,
            pad_mode="reflect",
            trim_right_ratio=1.0,
            use_conv_shortcut=False,
        ).to_dict(),
        decoder=decoder_config_class(
            vocab_size=codebook_size,
            num_codebooks=4,
            hidden_size=64,  # wider than the text encoder, so the real enc_to_dec_proj is there too
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=2048,
            # The id one past the codebook (512) starts every codebook and pads it, as 2048 does in the
            # real model. transformers warns that it is out of the vocabulary; the real model gets the same warning.
            pad_token_id=codebook_size,
            bos_token_id=codebook_size,
            audio_channels=1,
        ).to_dict(),
    )


def _audible_musicgen_(model, projections) -> None:
    """Give a fresh tiny MusicGen (plain or melody) codebooks and weights that make its output depend
    on its seed and its conditioning; `projections` are (name, Linear, fan-in) of the layers that carry
    the conditioning into the decoder. Draws from the global generator, seeded here."""
    import torch

    # EnCodec's codebooks are zero buffers that a checkpoint fills in. With all-zero codebooks every
    # code decodes to the same audio: any seed and any prompt would give an identical clip.
    torch.manual_seed(SEED + 1)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(0.0, 1.0)
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
    # The decoder's weights start at std 0.02 (initializer_factor). At width 64 that makes the text
    # conditioning negligible and the next-code logits almost uniform: different prompts then
    # sample exactly the same codes. Redraw the projections and the decoder at 1/fan_in, with 3x
    # on the output heads, so each step's distribution is peaked and depends on the prompt.
    torch.manual_seed(SEED + 2)
    for name, module, fan_in in [*projections, *((n, m, None) for n, m in model.decoder.named_modules())]:
        if isinstance(module, torch.nn.Linear):
            _fan_in_normal_(module.weight, fan_in or module.in_features, gain=3.0 if "lm_heads" in name else 1.0)
        elif isinstance(module, torch.nn.Embedding):
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0)


def _musicgen_generation_config(model) -> None:
    """facebook/musicgen-small's (and -melody's) generation defaults; 1500 tokens is its ~30 s limit."""
    generation_config = model.generation_config
    generation_config.do_sample = True
    generation_config.guidance_scale = 3.0
    generation_config.max_length = 1500
    generation_config.decoder_start_token_id = MUSICGEN_CODEBOOK_SIZE
    generation_config.bos_token_id = MUSICGEN_CODEBOOK_SIZE
    generation_config.pad_token_id = MUSICGEN_CODEBOOK_SIZE


def build_tiny_musicgen() -> TinyMusicgen:
    """MusicGen: T5 text encoder + 4-codebook decoder (delay pattern) + EnCodec at 32 kHz / 50 Hz."""
    import torch
    from transformers import (EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor)

    tokenizer = tiny_t5_tokenizer()
    config = MusicgenConfig(**_musicgen_sub_configs(tokenizer, MusicgenDecoderConfig))
    torch.manual_seed(SEED)
    model = MusicgenForConditionalGeneration(config)
    _audible_musicgen_(model, [("enc_to_dec_proj", model.enc_to_dec_proj, None)])
    _musicgen_generation_config(model)
    model.eval()
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_value=0.0)
    return TinyMusicgen(model=model, processor=MusicgenProcessor(feature_extractor=feature_extractor,
                                                                 tokenizer=tokenizer))


# facebook/musicgen-melody's preprocessor_config.json: MusicgenMelodyFeatureExtractor's settings as its
# to_dict() writes them. The class itself needs torchaudio, so the file is written out here.
MELODY_FEATURE_EXTRACTOR = {
    "chunk_length": 30,
    "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
    "feature_size": 12,
    "hop_length": 4096,
    "n_fft": 16384,
    "n_samples": 960000,
    "num_chroma": 12,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "MusicgenMelodyProcessor",
    "return_attention_mask": False,
    "sampling_rate": 32000,
    "stem_indices": [3, 2],
}


@dataclass
class TinyMusicgenMelody:
    """A MusicGen Melody model, its tokenizer and its feature extractor's settings, saved the way
    facebook/musicgen-melody is laid out (model, tokenizer files, preprocessor_config.json)."""

    model: MusicgenMelodyForConditionalGeneration
    tokenizer: Any
    feature_extractor: dict

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        self.tokenizer.save_pretrained(save_directory)
        text = json.dumps(self.feature_extractor, indent=2, sort_keys=True) + "\n"
        (Path(save_directory) / "preprocessor_config.json").write_text(text, encoding="utf-8")


def build_tiny_musicgen_melody() -> TinyMusicgenMelody:
    """MusicGen Melody: the tiny MusicGen's parts, with the decoder reading a 12-bin chromagram of the
    melody (projected, 235 frames: 30 s at hop 4096) and the text, both prepended to its sequence."""
    import torch
    from transformers import (MusicgenMelodyConfig, MusicgenMelodyDecoderConfig,
                              MusicgenMelodyForConditionalGeneration)

    tokenizer = tiny_t5_tokenizer()
    # The real processor class, as MusicgenMelodyProcessor.save_pretrained records it.
    tokenizer._set_processor_class("MusicgenMelodyProcessor")
    config = MusicgenMelodyConfig(**_musicgen_sub_configs(tokenizer, MusicgenMelodyDecoderConfig),
                                  num_chroma=12, chroma_length=235)  # facebook/musicgen-melody's
    torch.manual_seed(SEED)
    model = MusicgenMelodyForConditionalGeneration(config)
    # Each chroma frame is one-hot, so its projection sees one input of 1: drawn at std 1 (fan-in 1),
    # a frame's vector is on the scale of the code embeddings; at 1/12 the melody would barely count.
    _audible_musicgen_(model, [("enc_to_dec_proj", model.enc_to_dec_proj, None),
                               ("audio_enc_to_dec_proj", model.audio_enc_to_dec_proj, 1)])
    _musicgen_generation_config(model)
    model.eval()
    return TinyMusicgenMelody(model=model, tokenizer=tokenizer, feature_extractor=dict(MELODY_FEATURE_EXTRACTOR))
