"""Write tests/data/lumina_t2i_reference.json by running Alpha-VLLM/Lumina-T2X's own Lumina-T2I code
(lumina_t2i/models, lumina_t2i/transport) on the seeded cases of tests/test_lumina_t2i_reference.py
(CPU, float32; and the bfloat16 ones under autocast, as demo.py runs the 5B).

    git clone https://github.com/Alpha-VLLM/Lumina-T2X /tmp/Lumina-T2X   # tested at 1c60696
    python tests/data/make_lumina_t2i_reference.py /tmp/Lumina-T2X       # needs torchdiffeq (0.2.5)

(From a bare mirror: `git -C MIRROR archive HEAD lumina_t2i | tar -x -C /tmp/Lumina-T2X` and pass
`--commit $(git -C MIRROR rev-parse HEAD)`, which goes into the golden file.)

What cannot run without CUDA or fairscale is replaced, nothing else; the stand-ins are written to a
temporary folder put on sys.path:
- fairscale (not installed; the reference imports it unconditionally): Column/RowParallelLinear and
  ParallelEmbedding are nn.Linear/nn.Embedding taking and ignoring gather_output, input_is_parallel
  and init_method (with one rank they are exactly that, and hold the same `weight`/`bias`);
  get_model_parallel_world_size() is 1.
- flash_attn: the names model.py imports. In float32 the reference takes its SDPA branch (flash-attn
  is for fp16/bf16 only) and never calls them (checked). In bf16 it calls `flash_attn_varlen_func`
  (q, k, v packed as (total, heads, head_dim), cu_seqlens, max_seqlen, dropout_p, causal,
  softmax_scale): SDPA per sequence with that scale, non-causal, no dropout; and bert_padding's
  `index_first_axis` (rows of the flattened first axis), `pad_input` (scattered back to (batch,
  seqlen, ...), zeros elsewhere) and `unpad_input` (x_unpad, indices, cu_seqlens, max_seqlen, the
  four values model.py's `_upad_input` unpacks; it only calls it when queries and keys differ in
  length, never here).
- apex is absent: components.py falls back to its own vanilla RMSNorm (with a warning).
- `DiT_Llama.precompute_freqs_cis` calls `.cuda()` on its frequencies: torch.Tensor.cuda returns
  the tensor itself while this script runs.

The models are built as demo.py builds them (models.__dict__[name](qk_norm=, cap_feat_dim=) for
the 5B; DiT_Llama(...) with the case's shape otherwise), the seeded weights loaded with
strict=True from the port's FlagDiT of the test (the keys are the official checkpoint's), and
called as demo.py calls them: forward_with_cfg with cap_feats, cap_mask, cfg_scale, ntk_factor and
base_seqlen/proportional_attn, through Sampler(create_transport("Linear", "velocity")).sample_ode
(atol 1e-6, rtol 1e-3, time_shifting_factor) for the samples, whose [-1][:1] is kept.

The bf16 cases are demo.py's precision: the model built, cast (`model.eval().to(dtype)`) and then
loaded, features and state bf16, everything under `torch.autocast(device, dtype)`, the CPU's here,
with CUDA autocast's rule for layer_norm put on it (`cuda_autocast_layer_norm` in the test, which
says why). The single evaluation's t is the state's dtype, as torchdiffeq hands it to the model.
The golden file records the kernels they ran on (`bf16_kernels()`): bf16 bits depend on them.

The whole-request case is demo.py's model_main (lines 61-69 and 127-194) written out, as it cannot
be called (it is a multiprocessing worker behind a Gradio UI): the tiny LLaMA folder through
transformers' AutoModel/AutoTokenizer (add_bos_token, add_eos_token, padding right), the tiny VAE
(diffusers), and torchvision's to_pil_image (not installed) as its two lines for a float tensor.
The one change: the noise is drawn on the CPU (`torch.random.manual_seed(seed)`, then randn), where
the demo draws it on CUDA, whose generator gives other numbers for the same seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUBS = {
    "fairscale/__init__.py": "",
    "fairscale/nn/__init__.py": "",
    "fairscale/nn/model_parallel/__init__.py": "",
    "fairscale/nn/model_parallel/initialize.py": '''
def get_model_parallel_world_size():
    return 1

def get_model_parallel_rank():
    return 0

def get_model_parallel_src_rank():
    return 0

def get_model_parallel_group():
    return None
''',
    "fairscale/nn/model_parallel/layers.py": '''
import torch.nn as nn

class ColumnParallelLinear(nn.Linear):
    def __init__(self, in_features, out_features, bias=True, gather_output=True, init_method=None, **kwargs):
        super().__init__(in_features, out_features, bias=bias)

class RowParallelLinear(nn.Linear):
    def __init__(self, in_features, out_features, bias=True, input_is_parallel=False, init_method=None, **kwargs):
        super().__init__(in_features, out_features, bias=bias)

class ParallelEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim, init_method=None, **kwargs):
        super().__init__(num_embeddings, embedding_dim)
''',
    "flash_attn/__init__.py": '''
import torch
import torch.nn.functional as F

CALLS = [0]

def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, **kwargs):  # (total, H, D) packed sequences
    assert q.dtype in (torch.float16, torch.bfloat16) and dropout_p == 0.0 and not causal and not kwargs
    CALLS[0] += 1
    outs = []
    for b in range(len(cu_seqlens_q) - 1):
        qs = q[cu_seqlens_q[b]:cu_seqlens_q[b + 1]].transpose(0, 1)[None]
        ks = k[cu_seqlens_k[b]:cu_seqlens_k[b + 1]].transpose(0, 1)[None]
        vs = v[cu_seqlens_k[b]:cu_seqlens_k[b + 1]].transpose(0, 1)[None]
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, scale=softmax_scale)[0].transpose(0, 1))
    return torch.cat(outs)
''',
    "flash_attn/bert_padding.py": '''
import torch
import torch.nn.functional as F

def index_first_axis(x, indices):  # (total, ...) -> the rows at indices
    return x[indices]

def pad_input(x, indices, batch, seqlen):  # (nnz, ...) -> (batch, seqlen, ...), zeros where not indexed
    out = torch.zeros(batch * seqlen, *x.shape[1:], dtype=x.dtype, device=x.device)
    out[indices] = x
    return out.view(batch, seqlen, *x.shape[1:])

def unpad_input(x, attention_mask):  # (batch, seqlen, ...) -> (x_unpad, indices, cu_seqlens, max_seqlen_in_batch)
    seqlens = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    return x.reshape(-1, *x.shape[2:])[indices], indices, cu_seqlens, int(seqlens.max().item())
''',
}


def reference_model(RM, config):
    """DiT_Llama of the port's config, as demo.py builds it (5B by name)."""
    kwargs = dict(qk_norm=config.qk_norm, cap_feat_dim=config.cap_feat_dim)
    if (config.patch_size, config.dim, config.n_layers, config.n_heads, config.multiple_of) == (2, 3072, 32, 32, 256):
        return RM.DiT_Llama_5B_patch2(**kwargs)
    return RM.DiT_Llama(patch_size=config.patch_size, in_channels=config.in_channels, dim=config.dim,
                        n_layers=config.n_layers, n_heads=config.n_heads, multiple_of=config.multiple_of,
                        norm_eps=config.norm_eps, learn_sigma=config.learn_sigma, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="a checkout of Alpha-VLLM/Lumina-T2X (lumina_t2i/ is used)")
    parser.add_argument("--commit", help="the reference's commit, when the checkout is not a git work tree")
    parser.add_argument("--out", type=Path, default=HERE / "lumina_t2i_reference.json")
    args = parser.parse_args()

    stubs = Path(tempfile.mkdtemp(prefix="lumina-t2i-stubs-"))
    for name, text in STUBS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(textwrap.dedent(text))
    # demo.py runs from lumina_t2i/ and imports `models` and `transport` from there.
    sys.path[:0] = [str(args.reference / "lumina_t2i"), str(stubs), str(HERE.parent.parent), str(HERE.parent)]

    import flash_attn
    import torch
    from PIL import Image

    torch.Tensor.cuda = lambda self, *a, **kw: self  # precompute_freqs_cis: `.float().cuda()`

    import models as RM_package  # noqa: F401  (lumina_t2i/models/__init__.py, as demo.py imports it)
    import models.model as RM
    import test_lumina_t2i_reference as T
    from transport import Sampler, create_transport

    commit = args.commit
    try:
        commit = commit or subprocess.run(["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass

    def build(c, dtype=torch.float32):
        ref = reference_model(RM, c["config"]).eval().to(dtype)
        loaded = ref.load_state_dict({k: v.clone() for k, v in c["model"].state_dict().items()}, strict=True)
        assert not loaded.missing_keys and not loaded.unexpected_keys, loaded
        return ref

    def demo_kwargs(c):
        """demo.py's model_kwargs for the case's picture size."""
        w, h, native = c["width"], c["height"], c["native"]
        kwargs = dict(cap_feats=c["feats"], cap_mask=c["mask"], cfg_scale=c["cfg"])
        if c["proportional_attn"]:
            kwargs["proportional_attn"] = True
            kwargs["base_seqlen"] = (native // 16) ** 2 + (native // 16) * 2
        if c["ntk_scaling"]:
            kwargs["ntk_factor"] = ((w // 16) * (h // 16)) / ((native // 16) ** 2)
        return kwargs

    golden = {"reference": {"repo": "Alpha-VLLM/Lumina-T2X", "commit": commit}}
    for name in T.EVALUATIONS:
        c = T.case(name)
        ref = build(c)
        x = c["state"]
        with torch.no_grad():
            # transport/integrators.py: t = th.ones(x.size(0)).to(device) * t
            out = ref.forward_with_cfg(x, torch.ones(x.size(0)) * torch.tensor(c["t"]), **demo_kwargs(c))
        golden[name] = {"shape": list(out.shape), "out": T.rounded(out)}
        print(name, tuple(out.shape), "max |v|", out.abs().max().item())

    for name in T.SAMPLES:
        c = T.case(name)
        golden[name] = {}
        for solver, run in c["runs"].items():
            ref = build(c)
            calls = [0]

            def counted(*a, ref=ref, calls=calls, **kw):
                calls[0] += 1
                return ref.forward_with_cfg(*a, **kw)

            sample_fn = Sampler(create_transport("Linear", "velocity", None, None, None)).sample_ode(
                sampling_method=solver, num_steps=run["steps"], atol=1e-6, rtol=1e-3, reverse=False,
                time_shifting_factor=run["shift"])
            with torch.no_grad():
                samples = sample_fn(c["state"].clone(), counted, **demo_kwargs(c))[-1]
            samples = samples[:1]
            golden[name][solver] = {"evaluations": calls[0], "shape": list(samples.shape),
                                    "latent": T.rounded(samples)}
            print(name, solver, "evaluations", calls[0], "max |x|", samples.abs().max().item())

    from transformers import AutoModel, AutoTokenizer

    for name in T.PIPELINES:
        c = T.pipeline_case(name, Path(tempfile.mkdtemp(prefix="lumina-t2i-llama-")) / "llama")
        model, vae = build(c), c["vae"]
        # demo.py model_main: lines 61-69 (the LLaMA and its tokenizer), 127-194 (one request).
        model_lm = AutoModel.from_pretrained(c["llama"], torch_dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(c["llama"], add_bos_token=True, add_eos_token=True)
        tokenizer.padding_side = "right"
        calls = [0]

        def counted(*a, model=model, calls=calls, **kw):
            calls[0] += 1
            return model.forward_with_cfg(*a, **kw)

        with torch.no_grad():
            sample_fn = Sampler(create_transport("Linear", "velocity", None, None, None)).sample_ode(
                sampling_method=c["solver"], num_steps=c["steps"], atol=1e-6, rtol=1e-3, reverse=False,
                time_shifting_factor=c["shift"])
            w, h = c["width"], c["height"]
            latent_w, latent_h = w // 8, h // 8
            torch.random.manual_seed(c["noise_seed"])
            z = torch.randn([1, 4, latent_h, latent_w]).to(torch.float32)  # the demo draws it on "cuda"
            z = z.repeat(2, 1, 1, 1)
            cap_tok = tokenizer.encode(c["prompt"], truncation=False)
            null_cap_tok = tokenizer.encode("", truncation=False)
            tok = torch.zeros([2, max(len(cap_tok), len(null_cap_tok))], dtype=torch.long)
            tok_mask = torch.zeros_like(tok, dtype=torch.bool)
            tok[0, : len(cap_tok)] = torch.tensor(cap_tok)
            tok[1, : len(null_cap_tok)] = torch.tensor(null_cap_tok)
            tok_mask[0, : len(cap_tok)] = True
            tok_mask[1, : len(null_cap_tok)] = True
            cap_feats = model_lm(input_ids=tok).last_hidden_state
            model_kwargs = dict(cap_feats=cap_feats, cap_mask=tok_mask, cfg_scale=c["cfg"])
            if c["proportional_attn"]:
                model_kwargs["proportional_attn"] = True
                model_kwargs["base_seqlen"] = (c["native"] // 16) ** 2 + (c["native"] // 16) * 2
            if c["ntk_scaling"]:
                model_kwargs["ntk_factor"] = ((w // 16) * (h // 16)) / ((c["native"] // 16) ** 2)
            samples = sample_fn(z, counted, **model_kwargs)[-1]
            samples = samples[:1]
            latent = samples.clone()
            factor = 0.13025  # train_args.vae == "sdxl"
            samples = vae.decode(samples / factor).sample
            samples = (samples + 1.0) / 2.0
            samples.clamp_(0.0, 1.0)
            # torchvision's to_pil_image(samples[0].float()) for a float CHW tensor: mul(255).byte(), HWC, RGB.
            img = Image.fromarray(samples[0].float().mul(255).byte().permute(1, 2, 0).numpy())
        golden[name] = {"caption_lengths": [len(cap_tok), len(null_cap_tok)], "evaluations": calls[0],
                        "shape": list(latent.shape), "latent": T.rounded(latent),
                        "pooled": [round(v, 4) for v in T.pooled(img)]}
        print(name, "tokens", [len(cap_tok), len(null_cap_tok)], "evaluations", calls[0], "image", img.size)

    assert flash_attn.CALLS[0] == 0, "a float32 case took the reference's flash-attn branch"
    bf16 = torch.bfloat16
    golden["bf16 kernels"] = T.bf16_kernels()

    def bf16_values(x):
        values = T.rounded(x, 4)
        assert torch.equal(torch.tensor(values).to(bf16), x.reshape(-1)), "four digits must give bf16 back"
        return values

    with torch.no_grad(), T.cuda_autocast_layer_norm(), torch.autocast("cpu", bf16):  # demo.py:98, with CUDA's rule
        for name in T.BF16_EVALUATIONS:
            c = T.case(name, bf16)
            ref = build(c, bf16)
            x = c["state"]
            # torchdiffeq hands the model t in the state's dtype; integrators.py multiplies it into ones.
            out = ref.forward_with_cfg(x, torch.ones(x.size(0)) * torch.tensor(c["t"]).to(x.dtype), **demo_kwargs(c))
            assert out.dtype == bf16 and flash_attn.CALLS[0] > 0, (out.dtype, flash_attn.CALLS)
            golden[f"{name} bf16"] = {"shape": list(out.shape), "out": bf16_values(out)}
            print(name, "bf16", tuple(out.shape), "max |v|", out.abs().max().item(), "varlen calls", flash_attn.CALLS)

        for name in T.BF16_SAMPLES:
            c = T.case(name, bf16)
            golden[f"{name} bf16"] = {}
            for solver, run in c["runs"].items():
                ref = build(c, bf16)
                calls = [0]

                def counted(*a, ref=ref, calls=calls, **kw):
                    calls[0] += 1
                    return ref.forward_with_cfg(*a, **kw)

                sample_fn = Sampler(create_transport("Linear", "velocity", None, None, None)).sample_ode(
                    sampling_method=solver, num_steps=run["steps"], atol=1e-6, rtol=1e-3, reverse=False,
                    time_shifting_factor=run["shift"])
                samples = sample_fn(c["state"].clone(), counted, **demo_kwargs(c))[-1][:1]
                assert samples.dtype == bf16
                golden[f"{name} bf16"][solver] = {"evaluations": calls[0], "shape": list(samples.shape),
                                                  "latent": bf16_values(samples)}
                print(name, "bf16", solver, "evaluations", calls[0], "max |x|", samples.abs().max().item())

    # One line per entry: the golden values stay greppable without a line per number.
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in golden.items()]
    args.out.write_text("{\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    main()
