"""Built-in tiny Infinity models, saved the way the official releases are.

FoundationVision/Infinity publishes the transformer as a plain state dict (`infinity_2b_reg.pth`) and
each BSQ VAE as `{"vae": state_dict}` (`infinity_vae_d32reg.pth`), with no configs; the text encoder
is google/flan-t5-xl. The tiny ones are three built-in models written in that form (the VAE with the
plain `x.weight` names some released files have, which the loader maps to the `.conv.`/`.norm.`
wrappers), so they load through the same code, with torch.load(weights_only=True), as a download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .builtin_llamagen import FileSet
from .tiny_parts import SEED, tiny_t5_tokenizer

# What the tiny cards (model_zoo/tiny-infinity*.yaml) say; the builders write what they describe.
TRANSFORMER_FILE = "infinity_tiny.pth"
VAE_FILE = "infinity_vae_tiny.pth"
TINY_T5_WIDTH = 128  # Infinity's attentive text pool has text_channels / 128 heads


def _transformer_state() -> dict[str, Any]:
    import torch

    from ..engines.infinity.model import CONFIGS, Infinity

    torch.manual_seed(SEED + 20)
    model = Infinity(CONFIGS["tiny"])
    with torch.no_grad():  # torch's default init for the layers; the reference's for what starts at zero here
        model.cfg_uncond.normal_(0, 1.2 / 128 ** 0.5)
        for name, param in model.named_parameters():
            if name.endswith(("ada_gss", "mat_q", "pos_start")):
                param.normal_(0, 0.3)
        model.head.weight.mul_(4)  # bit logits of a few units: some bits sure, many in doubt
    return model.state_dict()


def _vae_checkpoint() -> dict[str, Any]:
    import torch

    from ..engines.infinity.vae import BSQDecoder, VAEConfig

    torch.manual_seed(SEED + 21)
    decoder = BSQDecoder(VAEConfig(codebook_dim=4, base_ch=32, ch_mult=(1, 1, 1, 1, 1)))
    plain = {}
    for key, value in decoder.state_dict().items():  # x.conv.weight -> x.weight, as some released files
        stem, _, leaf = key.rpartition(".")
        plain[stem.rpartition(".")[0] + "." + leaf if stem.endswith((".conv", ".norm")) else key] = value
    # The released files also hold the encoder and the quantizer's bit mask; the mask stands for them.
    plain["quantizer.lfq.mask"] = 2 ** torch.arange(3, -1, -1)
    return {"vae": plain}


def build_tiny_infinity() -> FileSet:
    import torch

    return FileSet({TRANSFORMER_FILE: lambda path: torch.save(_transformer_state(), path)})


def build_tiny_vae() -> FileSet:
    import torch

    return FileSet({VAE_FILE: lambda path: torch.save(_vae_checkpoint(), path)})


class TinyInfinityT5:
    """A 128-wide Flan-T5-style encoder and tokenizer, laid out as google/flan-t5-xl is."""

    def __init__(self) -> None:
        import torch
        from transformers import T5Config, T5EncoderModel

        self.tokenizer = tiny_t5_tokenizer()
        torch.manual_seed(SEED + 22)
        self.model = T5EncoderModel(T5Config(
            vocab_size=len(self.tokenizer), d_model=TINY_T5_WIDTH, d_ff=256, d_kv=32, num_heads=4, num_layers=2,
            relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0))

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.model.save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        self.tokenizer.save_pretrained(save_directory)
