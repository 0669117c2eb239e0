"""Parts the built-in tiny models share: the seed, tokenizers built in-process, the T5 encoder.

Tokenizers have a fixed, tiny vocabulary where any text still encodes (letters as pieces, everything
else as UTF-8 bytes), so multilingual and emoji prompts run through the tiny models too.
"""

from __future__ import annotations

SEED = 20260101

_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
_WORD_PIECE_CHARS = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"


def tiny_gemma_tokenizer(words: tuple[str, ...] = ()):
    """A Gemma-style tokenizer (SentencePiece-like BPE with byte fallback, `<bos>` prepended).

    Without `words`, no merges: every character is a token or falls back to its UTF-8 bytes, so any
    text (multilingual, emoji) encodes, exactly like Gemma's byte fallback does for rare characters.
    Each of `words` (lower-case ASCII) becomes one token ("▁red", or "red" first in the text), by merges
    that build it a letter at a time, as a trained BPE's would; anything else still encodes by letters.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import GemmaTokenizerFast

    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in _WORD_PIECE_CHARS:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    # Gemma adds no "▁" before the first word, so each word also merges bare. A merge ranks by its place in the
    # list and BPE applies the best-ranked pair first, so the "▁" chains come first (a bare "an" must not split
    # "▁orange") and longer bare words before shorter ones.
    for piece in ["▁" + w for w in words] + sorted(words, key=len, reverse=True):
        for end in range(2, len(piece) + 1):
            if piece[:end] not in vocab:
                vocab[piece[:end]] = len(vocab)
                merges.append((piece[:end - 1], piece[end - 1]))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
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


def tiny_t5_encoder(vocab_size: int):
    """T5 v1.1 encoder (CogVideoX uses t5-v1_1-xxl: gated-GELU)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))


def tiny_bert_tokenizer():
    """A bert-base-uncased-style WordPiece tokenizer ([CLS] text [SEP], lower-cased, [PAD] = 0) over
    single characters, so any ASCII text encodes. For Lumina-T2Audio's CLAP text branch."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(_WORD_PIECE_CHARS.lower()) - {"▁"})
    vocab = {tok: i for i, tok in enumerate(special + chars + [f"##{c}" for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", model_max_length=512)
