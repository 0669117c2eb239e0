"""Write tests/data/infinity_reference.json by running FoundationVision/Infinity's own code on the
seeded cases of tests/test_infinity_reference.py (CPU, float32, batch 1).

    git clone https://github.com/FoundationVision/Infinity /tmp/Infinity   # tested at 4c27bbb
    pip install --target /tmp/infinity-deps einops                         # its only import we lack
    python tests/data/make_infinity_reference.py /tmp/Infinity --deps /tmp/infinity-deps

What cannot run without CUDA is replaced, nothing else: flash-attn's two functions by SDPA with the
same arguments (stubs written to a temporary folder, with empty timm/torchvision stand-ins for
imports inference never uses), torch.compile off (fused_op.py), and CrossAttention's cast of
float32 inputs to bfloat16 for flash-attn (basic.py:395) dropped so float32 stays float32. The
reference's `vae_model` hard-codes base_ch 128; the cases' decoders are 32 wide, patched in.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUBS = {
    "flash_attn/__init__.py": '''
import torch
import torch.nn.functional as F

def flash_attn_func(q, k, v, dropout_p=0, softmax_scale=None, **kw):  # (B, L, H, c)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale)
    return out.transpose(1, 2)

def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0,
                                    softmax_scale=None):
    outs = []
    for b in range(len(cu_seqlens_q) - 1):
        qs, kvs = q[cu_seqlens_q[b]:cu_seqlens_q[b + 1]], kv[cu_seqlens_k[b]:cu_seqlens_k[b + 1]]
        o = F.scaled_dot_product_attention(qs.transpose(0, 1)[None], kvs[:, 0].transpose(0, 1)[None],
                                           kvs[:, 1].transpose(0, 1)[None], scale=softmax_scale)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)
''',
    "timm/__init__.py": "",
    "timm/models/__init__.py": "def register_model(fn):\n    return fn\n",
    "timm/models/layers/__init__.py": '''
import torch.nn as nn

class DropPath(nn.Module):
    def __init__(self, p=0.0):
        super().__init__()

    def forward(self, x):
        return x

def drop_path(x, *args, **kwargs):
    return x
''',
    "timm/loss/__init__.py": "import torch.nn as nn\n\nclass SoftTargetCrossEntropy(nn.Module):\n    pass\n",
    "torchvision/__init__.py": "transforms = None\n",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="a checkout of FoundationVision/Infinity")
    parser.add_argument("--deps", type=Path, help="a folder holding einops, if it is not installed")
    parser.add_argument("--out", type=Path, default=HERE / "infinity_reference.json")
    args = parser.parse_args()

    os.environ["TORCHDYNAMO_DISABLE"] = "1"  # before torch is imported: fused_op.py's torch.compile is a no-op
    stubs = Path(tempfile.mkdtemp(prefix="infinity-stubs-"))
    for name, text in STUBS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(textwrap.dedent(text))
    sys.path[:0] = [str(args.reference), str(stubs), *([str(args.deps)] if args.deps else []),
                    str(HERE.parent.parent), str(HERE.parent)]

    import torch

    import infinity.models.basic as RB
    import infinity.models.bsq_vae.vae as RV
    import infinity.models.infinity as RI
    import test_infinity_reference as T
    from infinity.utils.dynamic_resolution import dynamic_resolution_h_w

    source = textwrap.dedent(inspect.getsource(RB.CrossAttention.forward))
    assert "if q_compact.dtype == torch.float32:" in source
    scope: dict = {}
    exec(source.replace("if q_compact.dtype == torch.float32:", "if False:"), vars(RB), scope)  # noqa: S102
    RB.CrossAttention.forward = scope["forward"]
    autoencoder = RV.AutoEncoder
    RV.AutoEncoder = lambda a: autoencoder(argparse.Namespace(**{**vars(a), "base_ch": 32}))

    golden = {}
    for name in T.CASES:
        c = T.case(name)
        cfg = c["config"]
        plain = {}  # the released files' plain `x.weight` spelling, loaded by the reference's load_cnn
        for key, value in c["vae"].state_dict().items():
            stem, _, leaf = key.rpartition(".")
            plain[stem.rpartition(".")[0] + "." + leaf if stem.endswith((".conv", ".norm")) else key] = value.clone()
        vae = RV.vae_model({"vae": plain}, "dynamic", cfg.d_vae, 2 ** cfg.d_vae, patch_size=16,
                           encoder_ch_mult=[1] * 5, decoder_ch_mult=[1] * 5)
        for key, value in c["vae"].decoder.state_dict().items():
            assert torch.equal(vae.decoder.state_dict()[key], value), key
        # tools/run_infinity.py's load_infinity with scripts/infer.sh's flags, at the case's size.
        ref = RI.Infinity(
            vae_local=vae, text_channels=cfg.text_channels, text_maxlen=512, shared_aln=True, raw_scale_schedule=None,
            checkpointing="full-block", customized_flash_attn=False, fused_norm=True, pad_to_multiplier=128,
            use_flex_attn=False, add_lvl_embeding_only_first_block=1, use_bit_label=1, rope2d_each_sa_layer=1,
            rope2d_normalized_by_hw=2, pn=c["pn"], apply_spatial_patchify=0, inference_mode=True,
            train_h_div_w_list=[1.0], depth=cfg.depth, embed_dim=cfg.embed_dim, num_heads=cfg.num_heads,
            drop_path_rate=0.1, mlp_ratio=4, block_chunks=cfg.block_chunks).eval()
        loaded = ref.load_state_dict({k: v.clone() for k, v in c["model"].state_dict().items()})
        assert not loaded.missing_keys and not loaded.unexpected_keys, loaded

        def packed(features):  # encode_prompt's (kv_compact, lens, cu_seqlens_k, Ltext)
            n = features.shape[1]
            return features[0].clone(), [n], torch.tensor([0, n], dtype=torch.int32), n

        negative = packed(c["negative"]) if c["negative"] is not None else None
        scales = [(1, h, w) for _, h, w in dynamic_resolution_h_w[c["ratio"]][c["pn"]]["scales"]]
        bits, logits, decoded = [], [], {}
        sample = RI.sample_with_top_k_top_p_also_inplace_modifying_logits_

        def spy(lg, bits=bits, logits=logits, sample=sample, **kw):
            logits.append(lg.reshape(-1)[:8].tolist())
            idx = sample(lg, **kw)
            bits.append(T.hex_bits(idx[:, :, 0]))
            return idx

        decode = vae.decode

        def spy_decode(z, decoded=decoded, decode=decode):
            decoded["pixels"] = decode(z)
            return decoded["pixels"]

        RI.sample_with_top_k_top_p_also_inplace_modifying_logits_, vae.decode = spy, spy_decode
        with torch.no_grad():
            _, _, image = ref.autoregressive_infer_cfg(
                vae=vae, scale_schedule=scales, label_B_or_BLT=packed(c["text"]), g_seed=c["seed"], B=1,
                negative_label_B_or_BLT=negative, cfg_list=[c["cfg"]] * len(scales),
                tau_list=[c["tau"]] * len(scales), top_k=c["top_k"], top_p=c["top_p"], returns_vemb=1,
                cfg_insertion_layer=[0], vae_type=cfg.d_vae, ret_img=True, gt_leak=0, inference_mode=True)
        RI.sample_with_top_k_top_p_also_inplace_modifying_logits_ = sample
        golden[name] = {"bits": bits, "logits": logits, "pooled": [round(v, 6) for v in T.pooled(decoded["pixels"])],
                        "image_mean": round(image.float().mean().item(), 4), "size_hw": list(image.shape[1:3])}
        print(name, "scales", len(bits), "image", golden[name]["size_hw"])
    args.out.write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
