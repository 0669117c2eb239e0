"""Built-in tiny video models of the real architectures, for offline use and tests.

The video counterpart of `builtin.py`, built the same way: each builder returns an unsaved diffusers
pipeline of the real classes (Wan 2.1's `WanTransformer3DModel` + `AutoencoderKLWan` + umT5, and
CogVideoX's `CogVideoXTransformer3DModel` + `AutoencoderKLCogVideoX` + T5, each in its text-to-video
and image-to-video form, plus the control-video forms: Wan 2.1 VACE and CogVideoX-Fun control) with
tiny configs, seeded random weights and the in-process T5 tokenizer.
The component layout, schedulers and latent shapes follow the real Diffusers repos
(Wan-AI/Wan2.1-T2V-1.3B-Diffusers, Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, Wan-AI/Wan2.1-VACE-1.3B-diffusers,
THUDM/CogVideoX-2b, THUDM/CogVideoX-5b-I2V, alibaba-pai/CogVideoX-Fun-V1.1-5b-Pose), so the saved
folders load and run through the same code as a download.
Weights are random: outputs are noise-like clips, which is all a test needs.

What each tiny model supports (the real VAEs' 8x spatial / 4x temporal compression, patch 2):
- tiny-wan, tiny-wan-i2v: height and width any multiples of 16, num_frames 4k+1 (4k+1 come back).
- tiny-cogvideox: height and width any multiples of 16 (its 3D sin-cos positional table is recomputed
  for other sizes, as CogVideoX-2b's is); with no size given it makes its native 32x48, 9 frames.
- tiny-cogvideox-i2v: 32x48 only (learned positional embeddings, as CogVideoX-5b-I2V is fixed to
  480x720; other sizes raise ValueError in diffusers).
- All CogVideoX: num_frames 8k+1 (1, 9, 17, 25, ...) come back exactly; 4k+1 with k odd (5, 13, 21)
  come back as 4k+4, because the real CogVideoX VAE decodes an even number of latent frames to 4 each.
- tiny-wan-vace: as tiny-wan. Called with `video=` (the control clip, PIL frames at exactly height x width,
  as many as num_frames: fewer are zero-padded in latent space, more raise), `num_frames=len(video)`,
  optionally `reference_images=` (one PIL image of any size, letterboxed; it becomes an extra leading
  latent frame, dropped from the output), `mask=` (None: generate everything) and `conditioning_scale=`.
  Its control follows only weakly (random tiny VAE latents are small next to the real Wan VAE statistics
  the pipeline normalises them by), and the reference image barely at all.
- tiny-cogvideox-fun-control: height and width any multiples of 16 (3D RoPE, no learned positions);
  with no size given 32x48. It takes no num_frames: the clip is as long as `control_video=` (PIL frames,
  resized to height x width), by the CogVideoX frame rule above.
The pipelines' own defaults (480x832 x 81 frames for Wan, 49 frames for CogVideoX I2V) are the real
models' sizes and far too slow here: callers pass the small size. Reference size: 32x48, 9 frames
(about 0.1-0.25 s of CPU time per 2-step generation).
"""

from __future__ import annotations


from .tiny_parts import SEED, tiny_t5_encoder as _tiny_t5, tiny_t5_tokenizer

# Native size of the tiny CogVideoX models, in latent pixels (x8 for pixels): 32x48 px, 9 frames.
COGVIDEOX_SAMPLE_HEIGHT = 4
COGVIDEOX_SAMPLE_WIDTH = 6
COGVIDEOX_SAMPLE_FRAMES = 9


def _tiny_umt5(vocab_size: int):
    """umT5 encoder (Wan 2.1's text encoder is umt5-xxl: gated-GELU, untied relative attention bias)."""
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(
        vocab_size=vocab_size, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))


def _wan_scheduler():
    # What Wan2.1-T2V-1.3B-Diffusers ships (scheduler_config.json): UniPC over flow sigmas with
    # flow_shift 3.0 (the 480p value), although WanPipeline's type hint says FlowMatchEuler.
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   num_train_timesteps=1000, flow_shift=3.0)


def _tiny_wan_vae():
    """Wan 2.1's causal 3D VAE: 16 latent channels, 8x spatial and 4x temporal compression."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _tiny_wan_transformer(model_class=None, **config):
    """The tiny Wan DiT (`WanTransformer3DModel`, or `model_class`: the VACE DiT shares its config)."""
    from diffusers import WanTransformer3DModel

    return (model_class or WanTransformer3DModel)(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,  # RoPE splits it 8/4/4 over (t, h, w)
        text_dim=32,  # the text encoder's d_model
        freq_dim=256,
        ffn_dim=64,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
        **config,
    )


def build_tiny_wan():
    """Wan 2.1 text-to-video: Wan DiT (3D RoPE, cross-attention to umT5) + Wan causal VAE + umT5."""
    import torch
    from diffusers import WanPipeline

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = _tiny_umt5(len(tokenizer))
    torch.manual_seed(SEED + 1)
    transformer = _tiny_wan_transformer(in_channels=16, out_channels=16)
    torch.manual_seed(SEED + 2)
    vae = _tiny_wan_vae()
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                       scheduler=_wan_scheduler(), transformer=transformer)


def build_tiny_wan_i2v():
    """Wan 2.1 image-to-video: as `build_tiny_wan`, plus a CLIP vision encoder whose penultimate
    hidden states feed the DiT's image cross-attention, and 36 input channels (16 noise latents +
    4 first-frame mask + 16 image-condition latents)."""
    import torch
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = _tiny_umt5(len(tokenizer))
    torch.manual_seed(SEED + 1)
    # image_dim is the CLIP hidden size (the pipeline takes hidden_states[-2], not the projection);
    # added_kv_proj_dim is the DiT width, as in the real I2V config (5120 for 14B).
    transformer = _tiny_wan_transformer(in_channels=36, out_channels=16, image_dim=32, added_kv_proj_dim=32)
    torch.manual_seed(SEED + 2)
    vae = _tiny_wan_vae()
    torch.manual_seed(SEED + 3)
    # The real repo ships a plain CLIPVisionModel (open-clip ViT-H/14), which the pipeline's type hint names.
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32, hidden_act="gelu",
    ))
    # The PIL backend, named explicitly: `CLIPImageProcessor` is the torchvision backend in transformers 5
    # and falls back to this one (with a warning) without torchvision, so the saved class and the
    # preprocessing would otherwise depend on whether torchvision happens to be installed.
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   scheduler=_wan_scheduler(), image_processor=image_processor,
                                   image_encoder=image_encoder, transformer=transformer)


def build_tiny_wan_vace():
    """Wan 2.1 VACE (all-in-one video creation and editing): the Wan DiT plus a parallel stack of VACE
    blocks reading the conditioning stream (a control video's latents split by a mask into kept and
    regenerated parts, the mask itself folded 8x8 into channels, reference-image latents as extra
    leading frames) and adding a hint into the main stream after each of `vace_layers`."""
    import torch
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = _tiny_umt5(len(tokenizer))
    torch.manual_seed(SEED + 1)
    transformer = _tiny_wan_transformer(
        WanVACETransformer3DModel, in_channels=16, out_channels=16,
        # One VACE block per listed layer; layer 0 is required. The tiny DiT hints both its layers
        # (Wan2.1-VACE-1.3B: every other one of its 30; -14B: every fifth of its 40).
        vace_layers=[0, 1],
        # What the pipeline feeds it: 16 inactive + 16 reactive video latents + 64 (8x8) mask channels.
        vace_in_channels=96,
    )
    torch.manual_seed(SEED + 2)
    vae = _tiny_wan_vae()
    return WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                           scheduler=_wan_scheduler(), transformer=transformer)


def _cogvideox_scheduler(snr_shift_scale: float):
    # THUDM/CogVideoX-2b and -5b(-I2V) ship CogVideoXDDIMScheduler: v-prediction, zero-terminal-SNR,
    # trailing spacing; SNR shift 3.0 for 2b, 1.0 for the 5b models.
    from diffusers import CogVideoXDDIMScheduler

    return CogVideoXDDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=True, steps_offset=0, prediction_type="v_prediction",
        rescale_betas_zero_snr=True, timestep_spacing="trailing", snr_shift_scale=snr_shift_scale,
    )


def _tiny_cogvideox_vae():
    """CogVideoX's causal 3D VAE: four 3D down/up blocks (8x spatial), 4x temporal, 16 latent channels."""
    from diffusers import AutoencoderKLCogVideoX

    return AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=COGVIDEOX_SAMPLE_HEIGHT * 8,
        sample_width=COGVIDEOX_SAMPLE_WIDTH * 8,
        scaling_factor=1.15258426,
    )


def _tiny_cogvideox_transformer(**config):
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        out_channels=16,
        time_embed_dim=32,
        text_embed_dim=32,  # the text encoder's d_model
        num_layers=2,
        sample_width=COGVIDEOX_SAMPLE_WIDTH,
        sample_height=COGVIDEOX_SAMPLE_HEIGHT,
        sample_frames=COGVIDEOX_SAMPLE_FRAMES,
        patch_size=2,
        temporal_compression_ratio=4,
        # The pipelines pad every prompt to 226 tokens and the joint text+video sequence must match it.
        max_text_seq_length=226,
        **config,
    )


def build_tiny_cogvideox():
    """CogVideoX-2b text-to-video: expert-adaLN DiT over joint text+video tokens with 3D sin-cos
    positions + CogVideoX causal VAE + T5."""
    import torch
    from diffusers import CogVideoXPipeline

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = _tiny_t5(len(tokenizer))
    torch.manual_seed(SEED + 1)
    transformer = _tiny_cogvideox_transformer(in_channels=16)
    torch.manual_seed(SEED + 2)
    vae = _tiny_cogvideox_vae()
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                             transformer=transformer, scheduler=_cogvideox_scheduler(3.0))


def build_tiny_cogvideox_i2v():
    """CogVideoX-5b-I2V: as `build_tiny_cogvideox` with 3D RoPE plus learned positional embeddings
    and 32 input channels (16 noise latents + 16 first-frame image latents)."""
    import torch
    from diffusers import CogVideoXImageToVideoPipeline

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = _tiny_t5(len(tokenizer))
    torch.manual_seed(SEED + 1)
    transformer = _tiny_cogvideox_transformer(in_channels=32, use_rotary_positional_embeddings=True,
                                              use_learned_positional_embeddings=True)
    torch.manual_seed(SEED + 2)
    vae = _tiny_cogvideox_vae()
    return CogVideoXImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                         transformer=transformer, scheduler=_cogvideox_scheduler(1.0))


def build_tiny_cogvideox_fun_control():
    """CogVideoX-Fun control (pose/depth/canny video to video, alibaba-pai/CogVideoX-Fun-V1.1-5b-Pose): a
    CogVideoX-5b fine-tune whose DiT takes 32 input channels, the 16 noise latents concatenated with the
    16 VAE latents of the control video, frame by frame; 3D RoPE and no learned positions, so any size."""
    import torch
    from diffusers import CogVideoXFunControlPipeline

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = _tiny_t5(len(tokenizer))
    torch.manual_seed(SEED + 1)
    # The pipeline draws in_channels // 2 noise channels and concatenates as many control channels.
    transformer = _tiny_cogvideox_transformer(in_channels=32, use_rotary_positional_embeddings=True)
    torch.manual_seed(SEED + 2)
    vae = _tiny_cogvideox_vae()
    return CogVideoXFunControlPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                       transformer=transformer, scheduler=_cogvideox_scheduler(1.0))
