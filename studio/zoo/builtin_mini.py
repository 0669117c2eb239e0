"""The built-in mini Lumina-Next: the real classes (LuminaNextDiT2DModel, an SDXL-type AutoencoderKL,
Gemma) at a small config, *trained* on the simple scenes of studio/minis/scenes.py, so it draws what a
caption asks for ("a red circle on a blue background") at 64x64.

`untrained_mini_lumina_next()` is the architecture with fresh weights: tools/train_mini_lumina.py trains
it and saves the pipeline (diffusers format, float16 safetensors) under studio/minis/weights/. The
builder loads that folder with `LuminaPipeline.from_pretrained` and zoo.builtin saves it into the Hugging
Face cache like any built-in model, so a job loads it through the same call as a downloaded checkpoint.
"""

from __future__ import annotations


from .builtin import SHIPPED_WEIGHTS

MINI_LUMINA_NEXT = SHIPPED_WEIGHTS / "mini-lumina-next"
IMAGE_SIZE = 64  # native size: 8x8 latents, 4x4 patch tokens

TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   num_hidden_layers=3,  # Lumina-Next reads hidden_states[-2]: the output of the second layer
                   max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
TRANSFORMER_CONFIG = dict(sample_size=IMAGE_SIZE // 8, patch_size=2, in_channels=4, hidden_size=128, num_layers=4,
                          num_attention_heads=4, num_kv_heads=2, multiple_of=32, ffn_dim_multiplier=None,
                          norm_eps=1e-5, learn_sigma=True, qk_norm=True, cross_attention_dim=64, scaling_factor=1.0)
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, down_block_types=["DownEncoderBlock2D"] * 4,
                  up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[16, 32, 32, 32], layers_per_block=1,
                  norm_num_groups=8, sample_size=IMAGE_SIZE,
                  # No self-attention in the VAE's mid blocks (SDXL's has it): with it every latent cell carries the
                  # whole picture (the colour of a shape moved the latents of the far corner as much as its own),
                  # so inpainting's kept region told the model what was under the mask, and two scenes' latents
                  # side by side were not the latents of the two pictures side by side (Compose).
                  mid_block_add_attention=False)


def scene_tokenizer():
    """The built-in Gemma-style tokenizer, with each word of the scenes' captions one token."""
    from ..minis.scenes import VOCABULARY
    from .tiny_parts import tiny_gemma_tokenizer

    return tiny_gemma_tokenizer(VOCABULARY)


def untrained_mini_lumina_next(seed: int = 0):
    """The mini pipeline with freshly initialised weights (what training starts from)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, LuminaNextDiT2DModel, LuminaPipeline
    from transformers import GemmaConfig, GemmaModel

    tokenizer = scene_tokenizer()
    torch.manual_seed(seed)
    text_encoder = GemmaModel(GemmaConfig(vocab_size=len(tokenizer), **TEXT_CONFIG))
    transformer = LuminaNextDiT2DModel(**TRANSFORMER_CONFIG)
    torch.nn.init.normal_(transformer.pad_token, std=0.02)  # allocated with torch.empty by diffusers
    vae = AutoencoderKL(**VAE_CONFIG)
    return LuminaPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=vae,
                          text_encoder=text_encoder, tokenizer=tokenizer)


def build_mini_lumina_next():
    """The trained mini pipeline, from the weights shipped in the repository."""
    from diffusers import LuminaPipeline

    if not (MINI_LUMINA_NEXT / "model_index.json").is_file():
        raise FileNotFoundError(f"the mini model's weights are missing from {MINI_LUMINA_NEXT}; "
                                "rebuild them with: python tools/train_mini_lumina.py")
    return LuminaPipeline.from_pretrained(MINI_LUMINA_NEXT, local_files_only=True)
