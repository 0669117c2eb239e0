"""The model configs and sizes bench/gpu_check.py runs at: the released ones (the sizes the cards load), and
tiny ones of the same classes for its --dry-run on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Scale:
    """The configs and sizes of one run: the released ones, or tiny ones for --dry-run."""

    dtype: torch.dtype
    next_dit: dict[str, Any]
    gemma: dict[str, Any]
    sdxl_vae: dict[str, Any]
    image: tuple[int, int, int]  # width, height, steps
    wan_dit: dict[str, Any]
    umt5: dict[str, Any]
    wan_vae: dict[str, Any]
    video: tuple[int, int, int, int]  # width, height, frames, steps
    switch: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name -> (class, config)


# Released configs (diffusers layouts of Alpha-VLLM/Lumina-Next-SFT-diffusers, google/gemma-2b,
# stabilityai/sdxl-vae, Wan-AI/Wan2.1-T2V-1.3B/14B-Diffusers, Alpha-VLLM/Lumina-Image-2.0).
NEXT_2B = dict(sample_size=128, patch_size=2, in_channels=4, hidden_size=2304, num_layers=24, num_attention_heads=32,
               num_kv_heads=8, multiple_of=256, ffn_dim_multiplier=None, norm_eps=1e-5, learn_sigma=True, qk_norm=True,
               cross_attention_dim=2048, scaling_factor=1.0)
GEMMA_2B = dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192,
                pad_token_id=0, eos_token_id=1, bos_token_id=2)
SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                layers_per_block=2, sample_size=1024, scaling_factor=0.13025)
WAN_COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN_13B = dict(WAN_COMMON, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30)
WAN_14B = dict(WAN_COMMON, num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0)
LUMINA2_26B = dict(sample_size=128, patch_size=2, in_channels=16, hidden_size=2304, num_layers=26, num_refiner_layers=2,
                   num_attention_heads=24, num_kv_heads=8, multiple_of=256, norm_eps=1e-5, scaling_factor=1.0,
                   axes_dim_rope=(32, 32, 32), axes_lens=(300, 512, 512), cap_feat_dim=2304)

REAL = Scale(
    dtype=torch.bfloat16, next_dit=NEXT_2B, gemma=GEMMA_2B, sdxl_vae=SDXL_VAE, image=(1024, 1024, 30),
    wan_dit=WAN_13B, umt5=UMT5_XXL, wan_vae={}, video=(832, 480, 33, 50),
    switch={"lumina-next-2b": ("LuminaNextDiT2DModel", NEXT_2B),
            "lumina-image-2": ("Lumina2Transformer2DModel", LUMINA2_26B),
            "wan2.1-14b": ("WanTransformer3DModel", WAN_14B)},
)
_TINY_WAN = dict(WAN_COMMON, text_dim=32, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2)
DRY = Scale(
    dtype=torch.float32,
    next_dit=dict(NEXT_2B, sample_size=16, hidden_size=64, num_layers=2, num_attention_heads=4, num_kv_heads=2,
                  multiple_of=16, cross_attention_dim=32),
    gemma=dict(GEMMA_2B, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
               max_position_embeddings=512),
    sdxl_vae=dict(SDXL_VAE, block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8, sample_size=128),
    image=(128, 128, 2),
    wan_dit=_TINY_WAN,
    umt5=dict(UMT5_XXL, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2),
    wan_vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                 temperal_downsample=[False, True, True]),
    video=(64, 64, 5, 2),
    switch={"lumina-next-2b": ("LuminaNextDiT2DModel", dict(NEXT_2B, hidden_size=64, num_layers=2,
                                                             num_attention_heads=4, num_kv_heads=2, multiple_of=16,
                                                             cross_attention_dim=32)),
            "lumina-image-2": ("Lumina2Transformer2DModel", dict(LUMINA2_26B, hidden_size=96, num_layers=3,
                                                                  num_refiner_layers=1, num_attention_heads=4,
                                                                  num_kv_heads=2, multiple_of=16,
                                                                  axes_dim_rope=(8, 8, 8), cap_feat_dim=32)),
            "wan2.1-14b": ("WanTransformer3DModel", dict(_TINY_WAN, num_layers=4, ffn_dim=256))},
)

# The multi-GPU rows (bench/gpu_multi.py): timed transformer steps per context-parallel measurement, the share
# of the balanced pipeline each GPU's budget is given (under 1, so it fits no single GPU; over 1/2, so its
# largest component, Gemma-2B or the 2B DiT, fits one), and the image the balanced and one-GPU runs make.
CP_STEPS = 3
BALANCED_SHARE = 0.7
BALANCED_CALL = dict(prompt="a lighthouse on a cliff at dusk", width=1024, height=1024, num_inference_steps=4,
                     output_type="pt")
