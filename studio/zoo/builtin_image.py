"""Built-in tiny Lumina models: Lumina-Next (`LuminaNextDiT2DModel`, an SDXL-type `AutoencoderKL`,
Gemma) and Lumina-Image 2.0 (`Lumina2Transformer2DModel`, a Flux-type VAE, Gemma-2), from tiny
configs of the real classes with seeded random weights, saved in diffusers format by zoo.builtin.
"""

from __future__ import annotations

from .tiny_parts import SEED, tiny_gemma_tokenizer


def _text_config_kwargs(vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        num_hidden_layers=2,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )


def _tiny_vae(**config):
    """A tiny AutoencoderKL with four blocks: both Lumina pipelines assume an 8x VAE."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 16, 16, 16],
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=256,
        **config,
    )


def build_tiny_lumina_next():
    """Lumina-Next: Next-DiT (GQA, qk-norm, learned sigma) + SDXL-type VAE + Gemma."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, LuminaNextDiT2DModel, LuminaPipeline
    from transformers import GemmaConfig, GemmaModel

    tokenizer = tiny_gemma_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = GemmaModel(GemmaConfig(**_text_config_kwargs(len(tokenizer))))
    torch.manual_seed(SEED + 1)
    transformer = LuminaNextDiT2DModel(
        sample_size=32,  # 32 latent px * 8 = 256 px native size
        patch_size=2,
        in_channels=4,
        hidden_size=64,
        num_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        multiple_of=16,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        learn_sigma=True,
        qk_norm=True,
        cross_attention_dim=32,
        scaling_factor=1.0,
    )
    # diffusers allocates `pad_token` with torch.empty (a checkpoint always overwrites it); a
    # built model must not carry whatever memory held, or its weights differ from build to build.
    torch.nn.init.normal_(transformer.pad_token, std=0.02)
    # Each block's cross-attention gate starts at zero (tanh(0) = 0: text ignored) and only training
    # opens it; open it here so the tiny model's text cross-attention does what a checkpoint's does.
    for layer in transformer.layers:
        torch.nn.init.normal_(layer.gate, mean=0.5, std=0.1)
    torch.manual_seed(SEED + 2)
    vae = _tiny_vae(latent_channels=4, scaling_factor=0.13025)  # SDXL VAE's scaling, as Lumina-Next uses
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    return LuminaPipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer
    )


def build_tiny_lumina2():
    """Lumina-Image 2.0: unified Next-DiT with refiners and 3-axis RoPE + Flux-type 16-ch VAE + Gemma-2."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = tiny_gemma_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = Gemma2Model(Gemma2Config(**_text_config_kwargs(len(tokenizer)), sliding_window=64))
    torch.manual_seed(SEED + 1)
    transformer = Lumina2Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        hidden_size=64,
        num_layers=2,
        num_refiner_layers=1,
        num_attention_heads=4,
        num_kv_heads=2,
        multiple_of=16,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        scaling_factor=1.0,
        axes_dim_rope=(8, 4, 4),  # sums to the head dim (64 / 4)
        axes_lens=(300, 512, 512),
        cap_feat_dim=32,
    )
    torch.manual_seed(SEED + 2)
    # The Flux VAE's latent layout and scaling, as Lumina-Image 2.0 uses.
    vae = _tiny_vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                    use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=6.0)
    return Lumina2Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer
    )
