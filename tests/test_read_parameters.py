"""Read parameters: any PNG from this studio, A1111/Forge, ComfyUI, InvokeAI or Fooocus shows what made it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from studio.errors import MediaError
from studio.media import format_infotext, save_png
from studio.png_params import FoundParameters, read_parameters

NO_PARAMETERS = ("has no generation parameters that Studio can read "
                 "(looked for: studio, A1111/Forge, ComfyUI, InvokeAI, Fooocus)")


def _png(path: Path, chunks: dict[str, str]) -> Path:
    """An 8x8 PNG with these text chunks, written the way other tools write them."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)  # Pillow writes iTXt (UTF-8) for text that is not latin-1
    Image.new("RGB", (8, 8), (40, 80, 120)).save(path, format="PNG", pnginfo=info)
    return path


# --- our own PNGs ---------------------------------------------------------------------------------

def test_studio_png_gives_the_recorded_job_params_exactly(tmp_path: Path) -> None:
    params = {"model": "lumina-image-2", "prompt": "一只在月光下的猫，水墨画风格 🐱🌙",
              "negative_prompt": "blurry, 低质量",
              "seed": 4_000_000_000, "width": 1024, "height": 768, "steps": 30, "cfg": 4.0, "shift": None,
              "num_images": 1, "solver": None, "rope_scaling": None, "watershed": None, "proportional_attn": None,
              "cfg_mode": None}
    job = {"job_id": "j_7Fq2", "task": "image", "index": 0, "params": params, "used": {"sampler": "Euler"},
           "model_title": "Lumina Image 2.0", "studio_version": "0.1.0"}
    infotext = format_infotext(params["prompt"], params["negative_prompt"],
                               {"Steps": 30, "Sampler": "Euler", "CFG scale": 4.0, "Seed": params["seed"],
                                "Size": "1024x768", "Model": "lumina-image-2"})
    saved = save_png(Image.new("RGB", (8, 8)), tmp_path, "image/2024-05-01/j_7Fq2-00.png", infotext=infotext, job=job)

    found = read_parameters(saved.path)

    assert found == FoundParameters(
        source="studio", task="image", prompt=params["prompt"], negative_prompt="blurry, 低质量", params=params,
        details={"Model": "Lumina Image 2.0", "Sampler": "Euler", "Studio version": "0.1.0", "Job": "j_7Fq2"})


def test_studio_png_of_another_task_keeps_its_task(tmp_path: Path) -> None:
    job = {"job_id": "a1", "task": "compose", "index": 0, "params": {"model": "m", "prompt": "p", "seed": 7}}
    saved = save_png(Image.new("RGB", (8, 8)), tmp_path, "compose/2024-05-01/a1-00.png", infotext="p", job=job)
    found = read_parameters(saved.path)
    assert (found.source, found.task, found.params) == ("studio", "compose", {"model": "m", "prompt": "p", "seed": 7})


def test_broken_studio_job_falls_back_to_the_infotext(tmp_path: Path) -> None:
    path = _png(tmp_path / "x.png", {"parameters": "a cat\nSteps: 9, CFG scale: 3, Seed: 5, Size: 64x32",
                                     "studio_job": "{not json"})
    found = read_parameters(path)
    assert found.source == "a1111"
    assert found.params == {"width": 64, "height": 32, "steps": 9, "cfg": 3.0, "seed": 5}


# --- A1111 / Forge --------------------------------------------------------------------------------

A1111_TEXT = (
    "masterpiece, best quality, a lighthouse on a cliff at dusk, (dramatic sky:1.2), <lora:add_detail:0.5>\n"
    "Negative prompt: lowres, blurry, watermark, (bad hands:1.3)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 832x1216, "
    'Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Lora hashes: "add_detail: 7c6bad76eb54", '
    'ADetailer prompt: "a face, smiling", Version: v1.10.1'
)


def test_a1111_png(tmp_path: Path) -> None:
    found = read_parameters(_png(tmp_path / "00012-3141592653.png", {"parameters": A1111_TEXT}))

    assert found.source == "a1111" and found.task == "image"
    # The <lora:…> tag is the job's LoRA (the prompt without it), as the studio's own PNGs write it.
    assert found.prompt == "masterpiece, best quality, a lighthouse on a cliff at dusk, (dramatic sky:1.2)"
    assert found.negative_prompt == "lowres, blurry, watermark, (bad hands:1.3)"
    assert found.params == {"width": 832, "height": 1216, "steps": 28, "cfg": 6.5, "seed": 3141592653,
                            "loras": [{"name": "add_detail", "weight": 0.5}]}
    assert found.details == {"Sampler": "DPM++ 2M", "Schedule type": "Karras", "Model hash": "31e35c80fc",
                             "Model": "sd_xl_base_1.0", "Lora hashes": "add_detail: 7c6bad76eb54",
                             "ADetailer prompt": "a face, smiling", "Version": "v1.10.1"}


def test_a1111_lora_tags_keep_the_unets_weight(tmp_path: Path) -> None:
    # <lora:name:te:unet>: the denoiser's (UNet's) weight is the one Studio loads; <lora:name> is weight 1.
    text = "a fox <lora:style:0.3:0.9> in snow <lora:plain>\nSteps: 9, Seed: 5, Size: 64x64"
    found = read_parameters(_png(tmp_path / "x.png", {"parameters": text}))
    assert found.prompt == "a fox in snow"
    assert found.params["loras"] == [{"name": "style", "weight": 0.9}, {"name": "plain", "weight": 1.0}]


def test_a1111_malformed_numbers_stay_in_details(tmp_path: Path) -> None:
    text = "a cat\nSteps: many, Sampler: Euler, CFG scale: high, Seed: -1, Size: big"
    found = read_parameters(_png(tmp_path / "x.png", {"parameters": text}))
    assert found.params == {}
    assert found.details == {"Size": "big", "Steps": "many", "CFG scale": "high", "Seed": "-1", "Sampler": "Euler"}


def test_multilingual_and_emoji_prompt_survives(tmp_path: Path) -> None:
    text = ("一只猫 🐱, Schloß am Meer, кошка\nNegative prompt: 低质量 🚫\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    found = read_parameters(_png(tmp_path / "x.png", {"parameters": text}))  # written as iTXt (UTF-8)
    assert (found.prompt, found.negative_prompt) == ("一只猫 🐱, Schloß am Meer, кошка", "低质量 🚫")


# --- ComfyUI --------------------------------------------------------------------------------------

COMFY_GRAPH = {
    "3": {"class_type": "KSampler", "_meta": {"title": "KSampler"},
          "inputs": {"seed": 987654321, "steps": 25, "cfg": 7.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                     "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                     "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 4}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow, 35mm photo", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "cartoon, blurry", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}
COMFY_WORKFLOW = {"last_node_id": 9, "last_link_id": 9, "version": 0.4, "links": [[1, 4, 0, 3, 0, "MODEL"]],
                  "nodes": [{"id": 3, "type": "KSampler", "widgets_values": [987654321, "fixed", 25, 7.5]}]}


def _comfy_png(path: Path, graph: dict) -> Path:
    return _png(path, {"prompt": json.dumps(graph), "workflow": json.dumps(COMFY_WORKFLOW)})


def test_comfyui_png(tmp_path: Path) -> None:
    found = read_parameters(_comfy_png(tmp_path / "ComfyUI_00001_.png", COMFY_GRAPH))

    assert found.source == "comfyui" and found.task == "image"
    assert found.prompt == "a red fox in the snow, 35mm photo"
    assert found.negative_prompt == "cartoon, blurry"
    assert found.params == {"width": 1024, "height": 768, "steps": 25, "cfg": 7.5, "seed": 987654321}
    assert found.details == {"Sampler": "dpmpp_2m", "Scheduler": "karras", "Model": "sd_xl_base_1.0.safetensors"}


def test_comfyui_sdxl_encoders_primitives_loras_and_pass_through_nodes(tmp_path: Path) -> None:
    graph = {
        "10": {"class_type": "KSamplerAdvanced",
               "inputs": {"add_noise": "enable", "noise_seed": ["20", 0], "steps": 40, "cfg": 5, "start_at_step": 0,
                          "end_at_step": 10000, "sampler_name": "euler_ancestral", "scheduler": "normal",
                          "model": ["13", 0], "positive": ["14", 0], "negative": ["15", 0],
                          "latent_image": ["16", 0]}},
        "11": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "juggernautXL_v9.safetensors"}},
        "13": {"class_type": "LoraLoader", "inputs": {"lora_name": "detail.safetensors", "strength_model": 0.8,
                                                      "strength_clip": 1, "model": ["11", 0], "clip": ["11", 1]}},
        "14": {"class_type": "ControlNetApplyAdvanced",
               "inputs": {"positive": ["17", 0], "negative": ["15", 0], "control_net": ["30", 0],
                          "image": ["31", 0], "strength": 0.6}},
        "17": {"class_type": "CLIPTextEncodeSDXL",
               "inputs": {"text_g": "a castle on a hill", "text_l": "oil painting", "width": 4096, "height": 4096,
                          "clip": ["13", 1]}},
        "15": {"class_type": "CLIPTextEncode", "inputs": {"text": ["21", 0], "clip": ["13", 1]}},
        "20": {"class_type": "Seed (rgthree)", "inputs": {"seed": 1234}},
        "21": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "ugly, deformed"}},
        "16": {"class_type": "EmptyLatentImage", "inputs": {"width": 896, "height": 1152, "batch_size": 1}},
    }
    found = read_parameters(_comfy_png(tmp_path / "x.png", graph))

    assert (found.prompt, found.negative_prompt) == ("a castle on a hill", "ugly, deformed")
    assert found.params == {"width": 896, "height": 1152, "steps": 40, "cfg": 5.0, "seed": 1234}
    assert found.details["Model"] == "juggernautXL_v9.safetensors"
    assert found.details["LoRAs"] == "detail.safetensors (0.8)"
    assert found.details["Prompt (CLIP-L)"] == "oil painting"
    assert found.details["Sampler"] == "euler_ancestral"


def test_comfyui_flux_custom_sampler(tmp_path: Path) -> None:
    graph = {
        "13": {"class_type": "SamplerCustomAdvanced",
               "inputs": {"noise": ["25", 0], "guider": ["22", 0], "sampler": ["16", 0], "sigmas": ["17", 0],
                          "latent_image": ["27", 0]}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "22": {"class_type": "BasicGuider", "inputs": {"model": ["12", 0], "conditioning": ["26", 0]}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a neon sign that says 'open'", "clip": ["11", 0]}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {"class_type": "BasicScheduler",
               "inputs": {"scheduler": "simple", "steps": 20, "denoise": 1, "model": ["12", 0]}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "12": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
    }
    found = read_parameters(_comfy_png(tmp_path / "x.png", graph))

    assert (found.prompt, found.negative_prompt) == ("a neon sign that says 'open'", "")
    assert found.params == {"width": 1024, "height": 1024, "steps": 20, "seed": 42}
    assert found.details == {"Sampler": "euler", "Scheduler": "simple", "Model": "flux1-dev.safetensors"}


def test_comfyui_64bit_seed_and_missing_latent_do_not_crash(tmp_path: Path) -> None:
    graph = {key: dict(node, inputs=dict(node["inputs"])) for key, node in COMFY_GRAPH.items()}
    graph["3"]["inputs"]["seed"] = 156680208700286  # ComfyUI's seeds are 64-bit; ours stop at 2**32-1
    del graph["5"]

    found = read_parameters(_comfy_png(tmp_path / "x.png", graph))

    assert "seed" not in found.params and found.details["Seed"] == "156680208700286"
    assert "width" not in found.params and "height" not in found.params
    assert found.params == {"steps": 25, "cfg": 7.5}
    assert found.prompt == "a red fox in the snow, 35mm photo"


@pytest.mark.parametrize(
    "graph",
    [
        {"1": {"class_type": "KSampler", "inputs": {"positive": ["1", 0], "negative": ["1", 0], "model": ["1", 0],
                                                    "latent_image": ["1", 0], "seed": [1, 2, 3]}}},  # cycles
        {"1": {"class_type": "KSampler", "inputs": {"positive": ["404", 0], "seed": None, "steps": "x",
                                                    "cfg": ["2", 0], "latent_image": ["2", 0]}},
         "2": {"class_type": "Junk", "inputs": {"width": ["2", 0], "height": {"a": 1}}}},
        {"1": {"class_type": 5, "inputs": {}}, "2": {"inputs": {"text": 3}}, "3": "not a node", "4": {"inputs": []}},
        {"1": {"class_type": "KSampler", "inputs": {"seed": True, "steps": 1e300, "cfg": "nan", "model": [True, 0],
                                                    "positive": ["2", 0]}},
         "2": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["3", 0], "conditioning_2": ["3", 0]}},
         "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}}},
    ],
)
def test_comfyui_odd_graphs_never_crash(tmp_path: Path, graph: dict) -> None:
    found = read_parameters(_comfy_png(tmp_path / "x.png", graph))
    assert found.source == "comfyui"
    assert set(found.params) <= {"width", "height", "steps", "cfg", "seed"}
    assert all(isinstance(value, str) for value in found.details.values())


# --- InvokeAI -------------------------------------------------------------------------------------

INVOKE_METADATA = {
    "generation_mode": "sdxl_txt2img", "positive_prompt": "a cozy cabin in a snowy forest, warm light",
    "negative_prompt": "people, text", "width": 1216, "height": 832, "seed": 2218406374, "rand_device": "cpu",
    "cfg_scale": 6, "cfg_rescale_multiplier": 0, "steps": 32, "scheduler": "dpmpp_2m_k",
    "model": {"key": "8d7a2f1c-0000-4000-8000-000000000001", "hash": "blake3:7b1e", "name": "Juggernaut XL v9",
              "base": "sdxl", "type": "main"},
    "positive_style_prompt": "", "negative_style_prompt": "",
    "vae": {"key": "c0ffee", "hash": "blake3:aa", "name": "sdxl-vae-fp16-fix", "base": "sdxl", "type": "vae"},
    "loras": [{"model": {"key": "b1", "hash": "blake3:bb", "name": "detail-tweaker", "base": "sdxl", "type": "lora"},
               "weight": 0.75}],
    "app_version": "4.2.9",
}


def test_invokeai_png(tmp_path: Path) -> None:
    path = _png(tmp_path / "0f3c.png", {"invokeai_metadata": json.dumps(INVOKE_METADATA),
                                        "invokeai_graph": json.dumps({"id": "g", "nodes": {}, "edges": []})})
    found = read_parameters(path)

    assert found.source == "invokeai" and found.task == "image"
    assert (found.prompt, found.negative_prompt) == ("a cozy cabin in a snowy forest, warm light", "people, text")
    assert found.params == {"width": 1216, "height": 832, "steps": 32, "cfg": 6.0, "seed": 2218406374}
    assert found.details["Model"] == "Juggernaut XL v9"
    assert found.details["Base model"] == "sdxl"
    assert found.details["Scheduler"] == "dpmpp_2m_k"
    assert found.details["VAE"] == "sdxl-vae-fp16-fix"
    assert found.details["LoRAs"] == "detail-tweaker (0.75)"
    assert found.details["Version"] == "4.2.9"


def test_invokeai_3_model_fields(tmp_path: Path) -> None:
    metadata = {"app_version": "3.3.0post3", "positive_prompt": "landscape", "negative_prompt": "low quality",
                "width": 768, "height": 432, "seed": 356120443, "cfg_scale": 7.5, "steps": 50,
                "scheduler": "dpmpp_2m_sde_k", "model": {"model_name": "amixx_3", "base_model": "sd-1"}}
    found = read_parameters(_png(tmp_path / "x.png", {"invokeai_metadata": json.dumps(metadata)}))
    assert found.params == {"width": 768, "height": 432, "steps": 50, "cfg": 7.5, "seed": 356120443}
    assert (found.details["Model"], found.details["Base model"]) == ("amixx_3", "sd-1")


# --- Fooocus --------------------------------------------------------------------------------------

FOOOCUS_METADATA = {
    "adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion", "base_model_hash": "aeb7e9e689",
    "full_negative_prompt": ["blurry, low quality", "(worst quality, low quality, normal quality, lowres:1.4)"],
    "full_prompt": ["a samurai in the rain, cinematic", "cinematic still, dramatic lighting"],
    "guidance_scale": 4, "loras": [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]],
    "metadata_scheme": "fooocus", "negative_prompt": "blurry, low quality", "performance": "Speed",
    "prompt": "a samurai in the rain, cinematic", "prompt_expansion": "a samurai in the rain, cinematic, intricate",
    "refiner_model": "None", "refiner_switch": 0.5, "resolution": "(1152, 896)", "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras", "seed": "1234567890", "sharpness": 2, "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Enhance', 'Fooocus Sharp']", "vae": "Default (model)",
    "version": "Fooocus v2.5.5",
}


def test_fooocus_png(tmp_path: Path) -> None:
    path = _png(tmp_path / "2024-05-01_12-00-00_1234.png",
                {"parameters": json.dumps(FOOOCUS_METADATA), "fooocus_scheme": "fooocus"})
    found = read_parameters(path)

    assert found.source == "fooocus" and found.task == "image"
    assert (found.prompt, found.negative_prompt) == ("a samurai in the rain, cinematic", "blurry, low quality")
    assert found.params == {"width": 1152, "height": 896, "steps": 30, "cfg": 4.0, "seed": 1234567890}
    assert found.details["Sampler"] == "dpmpp_2m_sde_gpu"
    assert found.details["Scheduler"] == "karras"
    assert found.details["Model"] == "juggernautXL_v8Rundiffusion"
    assert found.details["Styles"] == "['Fooocus V2', 'Fooocus Enhance', 'Fooocus Sharp']"
    assert found.details["Performance"] == "Speed"
    assert found.details["LoRAs"] == "sd_xl_offset_example-lora_1.0 (0.1)"
    assert found.details["Version"] == "Fooocus v2.5.5"
    assert "Refiner" not in found.details  # "None" means unset in Fooocus


def test_fooocus_a1111_scheme_and_json_without_scheme_chunk(tmp_path: Path) -> None:
    text = "a samurai\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 77, Size: 1152x896"
    found = read_parameters(_png(tmp_path / "a.png", {"parameters": text, "fooocus_scheme": "a1111"}))
    assert (found.source, found.prompt, found.negative_prompt) == ("fooocus", "a samurai", "blurry")
    assert found.params == {"width": 1152, "height": 896, "steps": 30, "seed": 77}

    bare = read_parameters(_png(tmp_path / "b.png", {"parameters": json.dumps({"prompt": "p", "seed": 3})}))
    assert (bare.source, bare.prompt, bare.params) == ("fooocus", "p", {"seed": 3})


# --- files Studio cannot read ---------------------------------------------------------------------

def test_png_without_metadata(tmp_path: Path) -> None:
    path = _png(tmp_path / "plain.png", {"Software": "GIMP", "prompt": "not json", "parameters": "  "})
    with pytest.raises(MediaError, match=r"plain\.png has no generation parameters") as err:
        read_parameters(path)
    assert NO_PARAMETERS in str(err.value)


@pytest.mark.parametrize("kind", ["jpeg", "garbage", "missing"])
def test_not_a_png(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "photo.jpg"
    if kind == "jpeg":
        Image.new("RGB", (8, 8)).save(path, format="JPEG")
    elif kind == "garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(MediaError, match="photo.jpg"):
        read_parameters(path)
