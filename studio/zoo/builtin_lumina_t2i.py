"""Built-in tiny Lumina-T2I, saved the way the official release is.

Alpha-VLLM/Lumina-T2I holds `consolidated.00-of-01.safetensors` (the Flag-DiT, the official key
names) and `model_args.pth` (the training arguments, a pickled `types.SimpleNamespace`); its text
encoder is meta-llama/Llama-2-7b-hf (a LlamaForCausalLM checkpoint with its tokenizer) and its VAE
stabilityai/sdxl-vae (a diffusers AutoencoderKL folder). The three tiny ones are written in those
forms, with seeded random weights, so they load through the same code as a download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .builtin_llamagen import FileSet
from .tiny_parts import SEED

# What the tiny cards (model_zoo/tiny-lumina-t2i.yaml, tiny-llama.yaml) say.
WEIGHTS_FILE = "consolidated.00-of-01.safetensors"
ARGS_FILE = "model_args.pth"
TINY_MODEL = "DiT_Llama_tiny_patch2"
TINY_NATIVE = 128  # pixels: a 16x16 latent, 8x8 patches
TINY_LLAMA_WIDTH = 32


def _transformer_state() -> dict[str, Any]:
    import torch

    from ..engines.lumina_t2i.model import CONFIGS, FlagDiT

    torch.manual_seed(SEED + 30)
    model = FlagDiT(CONFIGS[TINY_MODEL].with_file(cap_feat_dim=TINY_LLAMA_WIDTH, qk_norm=True))
    with torch.no_grad():
        # The reference starts the gates, adaLN and output layers at zero (an untrained model is
        # flat grey); random values here make every part of the model change the picture.
        for name, param in model.named_parameters():
            if name.endswith(("gate", "eol_token", "pad_token")) or "adaLN_modulation" in name:
                param.normal_(0, 0.3)
            elif name.startswith(("final_layer.linear", "cap_embedder.1")):
                param.normal_(0, 0.2)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _model_args() -> Any:
    import types

    # The fields inference reads, and a few of the rest as train.py writes them.
    return types.SimpleNamespace(model=TINY_MODEL, qk_norm=True, image_size=TINY_NATIVE, vae="sdxl",
                                 lm="studio-builtin/tiny-llama", tokenizer_path="studio-builtin/tiny-llama",
                                 model_parallel_size=1, precision="fp32", global_seed=SEED)


def build_tiny_lumina_t2i() -> FileSet:
    import torch
    from safetensors.torch import save_file

    return FileSet({WEIGHTS_FILE: lambda path: save_file(_transformer_state(), str(path)),
                    ARGS_FILE: lambda path: torch.save(_model_args(), path)})


def build_tiny_sdxl_vae() -> Any:
    """An AutoencoderKL of SDXL's shape (4 latent channels, 8x down), 8 to 16 wide."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED + 31)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=4, sample_size=TINY_NATIVE, scaling_factor=0.13025)


def tiny_llama_tokenizer() -> Any:
    """A LLaMA-style tokenizer (BPE with byte fallback, `<s>` = 1, `</s>` = 2 as LLaMA's): letters
    as pieces, everything else as UTF-8 bytes, so any text encodes."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import LlamaTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-":
        vocab.setdefault(char, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # LLaMA-2's own settings: BOS added, EOS not (Lumina-T2I asks for both when it loads it).
    return LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                              add_bos_token=True, add_eos_token=False, padding_side="right", model_max_length=512)


class TinyLlama:
    """A 32-wide, two-layer LlamaForCausalLM and its tokenizer, laid out as meta-llama/Llama-2-7b-hf is."""

    def __init__(self) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        self.tokenizer = tiny_llama_tokenizer()
        torch.manual_seed(SEED + 32)
        self.model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(self.tokenizer), hidden_size=TINY_LLAMA_WIDTH, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, bos_token_id=1,
            eos_token_id=2, tie_word_embeddings=False))

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.model.save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        self.tokenizer.save_pretrained(save_directory)
