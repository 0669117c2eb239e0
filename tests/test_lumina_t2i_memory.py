"""Lumina-T2I at real size, on the meta device (no weights), and its memory plan on a 24 GB GPU.

The 5B Flag-DiT's config has the released model's parameter count and key names. Its components
at real size (LLaMA-2-7B and the Flag-DiT in bf16, the SDXL VAE in float32) are measured as the
memory scheduler measures a loaded pipeline, and the scheduler's own decision on a 24 GB budget
(23.5 GiB, in bytes, as on the CPU) is checked: never LLaMA-7B and the 5B DiT on the device at once, unless the
DiT is stored in fp8, when all three fit. The tiny model runs the same under every placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.engines.lumina_t2i.files import TrainArgs
from studio.engines.lumina_t2i.model import CONFIGS, FlagDiT
from studio.engines.lumina_t2i.pipeline import LuminaT2IPipeline
from studio.history import JobStatus
from studio.runtime.footprint import Footprint
from studio.runtime.memory import MemoryScheduler
from studio.runtime.placement import LADDER, Placement
from studio.services import Studio
from studio.settings import REPO_ROOT
from studio.tasks import get_task
from studio.zoo.cards import CardRegistry

from helpers import pixels

GiB = 2**30
# A 24 GB card (24 GiB) as the studio's budget sees it: what CUDA reports free there, less its context.
BUDGET = int(23.5 * GiB)
CARDS = CardRegistry.load([REPO_ROOT / "model_zoo"])


def test_the_5b_config_has_the_released_parameter_count_and_key_names():
    with torch.device("meta"):
        model = FlagDiT(CONFIGS["DiT_Llama_5B_patch2"])
    assert sum(p.numel() for p in model.parameters()) == 5_046_643_744
    keys = model.state_dict().keys()
    assert len(keys) == 688
    # As in consolidated.00-of-01.safetensors (fairscale's parallel linears keep plain weight names).
    layer = {k.split(".", 2)[2] for k in keys if k.startswith("layers.31.")}
    assert layer == {"attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
                     "attention.wk_y.weight", "attention.wv_y.weight", "attention.gate",
                     "attention.q_norm.weight", "attention.q_norm.bias", "attention.k_norm.weight",
                     "attention.k_norm.bias", "attention.ky_norm.weight", "attention.ky_norm.bias",
                     "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
                     "attention_norm.weight", "ffn_norm.weight", "attention_y_norm.weight",
                     "adaLN_modulation.1.weight", "adaLN_modulation.1.bias"}
    rest = {k for k in keys if not k.startswith("layers.")}
    assert rest == {"x_embedder.weight", "x_embedder.bias", "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias",
                    "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias", "cap_embedder.0.weight",
                    "cap_embedder.0.bias", "cap_embedder.1.weight", "cap_embedder.1.bias", "final_layer.linear.weight",
                    "final_layer.linear.bias", "final_layer.adaLN_modulation.1.weight",
                    "final_layer.adaLN_modulation.1.bias", "eol_token", "pad_token"}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["layers.0.feed_forward.w1.weight"] == (8192, 3072)
    assert shapes["layers.0.attention.wk_y.weight"] == (3072, 4096)
    assert shapes["layers.0.adaLN_modulation.1.weight"] == (6 * 3072, 1024)
    assert shapes["final_layer.linear.weight"] == (2 * 2 * 8, 3072)  # learn sigma: 8 channels


def _real_size(fp8: bool = False) -> LuminaT2IPipeline:
    from diffusers import AutoencoderKL
    from transformers import LlamaConfig, LlamaModel

    with torch.device("meta"):
        llama = LlamaModel(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                       max_position_embeddings=4096)).to(torch.bfloat16)
        dit = FlagDiT(CONFIGS["DiT_Llama_5B_patch2"]).to(torch.bfloat16)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                            sample_size=1024, scaling_factor=0.13025)
    if fp8:  # what layerwise casting stores: the blocks' linear weights in one byte each
        for name, module in dit.named_modules():
            if isinstance(module, torch.nn.Linear) and not name.startswith(FlagDiT.skip_in_fp8):
                module.weight.data = module.weight.data.to(torch.float8_e4m3fn)
    args = TrainArgs(model="DiT_Llama_5B_patch2", qk_norm=True, image_size=1024, vae="sdxl")
    return LuminaT2IPipeline(llama, None, dit, vae, args)


def _working(card_id: str, size: int) -> int:
    task = get_task("image")
    card = CARDS.get(card_id)
    spec = task.spec_type.parse({"model": card_id, "prompt": "a lighthouse", "width": size, "height": size})
    return task.working_bytes(spec.resolved(card), card)


def test_the_memory_plan_the_card_states_is_what_the_tensors_measure():
    sizes = Footprint.measure(_real_size()).components
    assert sizes["text_encoder"] / GiB == pytest.approx(12.31, abs=0.01)
    assert sizes["transformer"] / GiB == pytest.approx(9.40, abs=0.01)
    assert sizes["vae"] / GiB == pytest.approx(0.31, abs=0.01)
    fp8 = Footprint.measure(_real_size(fp8=True)).components["transformer"] / GiB
    assert fp8 == pytest.approx(4.7, abs=0.05)


@pytest.mark.parametrize("size", [1024, 1664])
def test_on_24_gb_the_scheduler_never_puts_llama_and_the_5b_dit_on_the_device_together(size):
    card = CARDS.get("lumina-t2i")
    footprint = Footprint.measure(_real_size())
    scheduler = MemoryScheduler(lambda c: None, device="cpu", device_budget=BUDGET)
    working = _working("lumina-t2i", size)
    placement = scheduler.choose(card, footprint, working)
    assert placement is Placement.MODEL_OFFLOAD
    # Under model offload one component at a time is on the device: LLaMA's 12.3 GiB is the peak.
    assert footprint.device_bytes(placement) == footprint.components["text_encoder"]
    together = footprint.components["text_encoder"] + footprint.components["transformer"]
    assert together + working > BUDGET >= footprint.device_bytes(placement) + working


def test_with_the_dit_in_fp8_everything_fits_24_gb_at_1024():
    card = CARDS.get("lumina-t2i")
    footprint = Footprint.measure(_real_size(fp8=True))
    scheduler = MemoryScheduler(lambda c: None, device="cpu", device_budget=BUDGET)
    assert scheduler.choose(card, footprint, _working("lumina-t2i", 1024)) is Placement.FULL


def test_under_model_offload_each_component_moves_the_one_before_it_off_the_device(studio):
    with studio.scheduler.acquire(studio.cards.get("tiny-lumina-t2i")) as lease:
        pipe = lease.pipeline
    from studio.runtime.placement import apply_placement, park

    park(pipe, lease.placement)
    apply_placement(pipe, Placement.MODEL_OFFLOAD, "cpu")
    try:
        # accelerate's chained offload: a component's forward first offloads the hook before it.
        # The chain is text encoder -> Flag-DiT -> VAE, the order they run in.
        hooks = {name: module._hf_hook for name, module in pipe.components.items() if hasattr(module, "_hf_hook")}
        assert list(hooks) == ["text_encoder", "transformer", "vae"]
        assert hooks["transformer"].prev_module_hook.model is pipe.text_encoder
        assert hooks["vae"].prev_module_hook.model is pipe.transformer
    finally:
        park(pipe, Placement.MODEL_OFFLOAD)


@pytest.mark.parametrize("placement", [p.value for p in LADDER])
def test_every_placement_gives_the_same_pixels(tmp_path, model_cache, placement):
    from studio.settings import Settings

    results = []
    for chosen in ("full", placement):
        settings = Settings.load(env={}, home=tmp_path / chosen, model_cache=model_cache).replace(placement=chosen)
        with Studio(settings) as studio:
            job = studio.run("image", {"model": "tiny-lumina-t2i", "prompt": "a kite", "seed": 3, "steps": 3})
            assert job.status is JobStatus.DONE, job.error
            assert studio.history.get_job(job.id).placement == chosen
            results.append(pixels(job.outputs[0].path))
    assert np.array_equal(results[0], results[1])
