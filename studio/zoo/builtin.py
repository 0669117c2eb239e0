"""Built-in tiny models of the real architectures, for offline use and tests.

Each builder makes a diffusers pipeline (or, in builtin_video/_audio/_llamagen, a transformers model
or the official file layout of a native engine) from tiny configs of the real classes (Lumina-Next's
`LuminaNextDiT2DModel`, Lumina-Image 2.0's `Lumina2Transformer2DModel`, an SDXL/Flux-style
`AutoencoderKL`, Gemma / Gemma-2 text encoders) with seeded random weights and a tokenizer built
in-process. It is saved once, in diffusers format, as a snapshot in the Hugging Face cache layout
(`models--studio-builtin--NAME/snapshots/REV`, `refs/main`), so from then on it loads through exactly
the same `from_pretrained(repo_id, cache_dir=..., local_files_only=True)` call as a downloaded
checkpoint. Weights are random: outputs are noise-like pictures, which is all a test needs.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Callable

from filelock import FileLock

BUILTIN_NAMESPACE = "studio-builtin"
# Bump when a builder changes: a new revision is built next to the old one.
BUILDER_VERSION = "3"
SEED = 20260101

_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
_WORD_PIECE_CHARS = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"


def tiny_gemma_tokenizer():
    """A Gemma-style tokenizer (SentencePiece-like BPE with byte fallback, `<bos>` prepended).

    No merges: every character is a token or falls back to its UTF-8 bytes, so any text
    (multilingual, emoji) encodes, exactly like Gemma's byte fallback does for rare characters.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import GemmaTokenizerFast

    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in _WORD_PIECE_CHARS:
        vocab.setdefault(char, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    bos = vocab["<bos>"]
    # Gemma prepends <bos>; without it an empty (negative) prompt has no tokens, and a fully
    # masked cross-attention turns the whole latent into NaN.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return GemmaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        padding_side="right",
        model_max_length=512,
    )


def tiny_t5_tokenizer():
    """A T5-style tokenizer (SentencePiece-like unigram with byte fallback, `</s>` appended).

    Like `tiny_gemma_tokenizer`: a fixed, tiny vocabulary where any text still encodes (letters as
    pieces, everything else as UTF-8 bytes). For the T5/umT5/Flan-T5 encoders of video and audio models.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"<0x{byte:02X}>", -10.0) for byte in range(256)]
    pieces += [(char, -5.0) for char in _WORD_PIECE_CHARS]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=True))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁",
                                                                                prepend_scheme="always")])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


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


def builders() -> dict[str, Callable[[], object]]:
    """Every built-in model builder by name (imported on first use: the video and audio ones are heavy)."""
    from .builtin_video import VIDEO_BUILDERS

    builders: dict[str, Callable[[], object]] = {
        "tiny-lumina-next": build_tiny_lumina_next,
        "tiny-lumina2": build_tiny_lumina2,
    }
    from .builtin_audio import AUDIO_BUILDERS
    from .builtin_llamagen import LLAMAGEN_BUILDERS

    builders.update(VIDEO_BUILDERS)
    builders.update(AUDIO_BUILDERS)
    builders.update(LLAMAGEN_BUILDERS)
    return builders


def builtin_repo_id(name: str) -> str:
    return f"{BUILTIN_NAMESPACE}/{name}"


def builtin_revision(name: str) -> str:
    """A commit-like hash that changes whenever the builder does."""
    return hashlib.sha1(f"{name}:{BUILDER_VERSION}:{SEED}".encode()).hexdigest()


def ensure_builtin(name: str, cache_dir: Path) -> tuple[str, str]:
    """Build and save the tiny model `name` into the HF cache unless it is there; return (repo_id, revision)."""
    BUILDERS = builders()
    if name not in BUILDERS:
        raise KeyError(f"no built-in model builder named {name!r}; known: {', '.join(sorted(BUILDERS))}")
    repo_id, revision = builtin_repo_id(name), builtin_revision(name)
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision

    def done() -> bool:  # the snapshot appears whole: it is renamed into place once every file is written
        return snapshot.is_dir() and any(snapshot.iterdir())

    if done():
        return repo_id, revision
    repo_dir.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once (a test run and the app) must not write the same snapshot.
    with FileLock(str(repo_dir / ".studio-build.lock")):
        if not done():
            staging = repo_dir / f".building-{uuid.uuid4().hex}"
            try:
                BUILDERS[name]().save_pretrained(staging, safe_serialization=True)
                snapshot.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(snapshot, ignore_errors=True)
                staging.rename(snapshot)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(revision)
    return repo_id, revision
