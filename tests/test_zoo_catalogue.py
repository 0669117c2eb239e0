"""The shipped model catalogue: every card loads, names the right repo and a class that exists, and
the models the studio cannot run yet are listed honestly rather than hidden or offered as working."""

from __future__ import annotations

import diffusers
import pytest
import transformers

from studio.settings import REPO_ROOT
from studio.zoo.cards import CardRegistry, ModelCard, parse_size
from studio.zoo.hub import RemoteFile, select_files

SHIPPED = REPO_ROOT / "model_zoo"

# Engines the studio implements itself (DESIGN.md: a native engine only where neither library has one).
NATIVE_ENGINES = {"llamagen", "infinity", "lumina-t2i", "lumina-audio",
                  # VideoX-Fun's Wan2.1-Fun checkpoints in their original layout, and their components.
                  "wan-fun-inp", "wan-fun-control", "wan-fun-camera", "wan-fun",
                  # ESRGAN / Real-ESRGAN upscalers (studio.engines.esrgan).
                  "rrdbnet"}

# The image models that run today; they must stay runnable.
RUNNABLE_TODAY = {"lumina-next-sft", "lumina-image-2", "tiny-lumina-next", "tiny-lumina2"}
# Cards of the catalogue whose systems the studio runs now (the Video, Audio and Music tabs).
RUNNABLE_NOW = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p", "cogvideox-2b", "cogvideox-5b",
                "cogvideox-5b-i2v", "stable-audio-open-1.0", "audioldm2", "audioldm2-music", "musicgen-small",
                "musicgen-medium", "musicgen-melody", "wan2.1-vace-1.3b", "cogvideox-fun-v1.1-5b-pose",
                # The native LlamaGen engine, and the text encoder its text-to-image models require.
                "llamagen-c2i-b-384", "llamagen-c2i-l-384", "llamagen-c2i-xl-384", "llamagen-t2i-xl-256",
                "llamagen-t2i-xl-512", "flan-t5-xl",
                # The native Infinity engine: 2B and 125M, and the BSQ VAEs they require.
                "infinity-2b", "infinity-125m", "infinity-vae-d16", "infinity-vae-d24", "infinity-vae-d32",
                "infinity-vae-d32reg", "infinity-vae-d64",
                # The native Lumina-T2I engine, and the LLaMA-2-7B and SDXL VAE cards it requires.
                "lumina-t2i", "llama-2-7b", "sdxl-vae",
                # The native Lumina audio engine, and the tokenizer cards its models require.
                "lumina-t2audio", "lumina-t2music", "bert-base-uncased-tokenizer", "flan-t5-large-tokenizer",
                # VideoX-Fun's Wan2.1-Fun InP and Control, and the umT5 + VAE and CLIP cards they require.
                "wan2.1-fun-1.3b-inp", "wan2.1-fun-14b-inp", "wan2.1-fun-v1.1-1.3b-inp", "wan2.1-fun-v1.1-14b-inp",
                "wan2.1-fun-1.3b-control", "wan2.1-fun-14b-control", "wan2.1-fun-v1.1-1.3b-control",
                "wan2.1-fun-v1.1-14b-control",
                "wan2.1-fun-v1.1-1.3b-control-camera", "wan2.1-fun-v1.1-14b-control-camera",
                "wan2.1-umt5-vae", "wan2.1-clip-vit-h"}

# What a Wan2.1-Fun card fetches of its repo: the transformer in VideoX-Fun's layout, none of the .pth pickles.
FUN_FILES = {"config.json", "diffusion_pytorch_model.safetensors"}
# (repo, loader class or engine, files a download must fetch or None for the library's usual set,
#  task). Repos holding many checkpoints (LlamaGen, Infinity) are told apart by their files.
CATALOGUE = [
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "WanPipeline", None, "video"),
    ("Wan-AI/Wan2.1-T2V-14B-Diffusers", "WanPipeline", None, "video"),
    ("Wan-AI/Wan2.1-VACE-1.3B-diffusers", "WanVACEPipeline", None, "video"),
    ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "WanImageToVideoPipeline", None, "video"),
    ("THUDM/CogVideoX-2b", "CogVideoXPipeline", None, "video"),
    ("THUDM/CogVideoX-5b", "CogVideoXPipeline", None, "video"),
    ("THUDM/CogVideoX-5b-I2V", "CogVideoXImageToVideoPipeline", None, "video"),
    ("alibaba-pai/CogVideoX-Fun-V1.1-5b-Pose", "CogVideoXFunControlPipeline", None, "video"),
    ("stabilityai/stable-audio-open-1.0", "StableAudioPipeline", None, "audio"),
    ("cvssp/audioldm2", "AudioLDM2Pipeline", None, "audio"),
    ("cvssp/audioldm2-music", "AudioLDM2Pipeline", None, "music"),
    ("facebook/musicgen-small", "MusicgenForConditionalGeneration", None, "music"),
    ("facebook/musicgen-medium", "MusicgenForConditionalGeneration", None, "music"),
    ("facebook/musicgen-melody", "MusicgenMelodyForConditionalGeneration", None, "music"),
    ("FoundationVision/LlamaGen", "llamagen", {"c2i_B_384.pt", "vq_ds16_c2i.pt"}, "image"),
    ("FoundationVision/LlamaGen", "llamagen", {"c2i_L_384.pt", "vq_ds16_c2i.pt"}, "image"),
    ("FoundationVision/LlamaGen", "llamagen", {"c2i_XL_384.pt", "vq_ds16_c2i.pt"}, "image"),
    ("FoundationVision/LlamaGen", "llamagen", {"vq_ds16_c2i.pt"}, "component"),
    # LlamaGen's README links its text-to-image checkpoints from this repo, not FoundationVision/LlamaGen.
    ("peizesun/llamagen_t2i", "llamagen", {"t2i_XL_stage1_256.pt", "vq_ds16_t2i.pt"}, "image"),
    ("peizesun/llamagen_t2i", "llamagen", {"t2i_XL_stage2_512.pt", "vq_ds16_t2i.pt"}, "image"),
    # Each Infinity transformer card fetches its own file; its VAE is a card it requires.
    ("FoundationVision/Infinity", "infinity", {"infinity_2b_reg.pth"}, "image"),
    ("FoundationVision/Infinity", "infinity", {"infinity_125M_256x256.pth"}, "image"),
    ("FoundationVision/Infinity", "infinity", {"infinity_vae_d32reg.pth"}, "component"),
    ("google/flan-t5-xl", "T5EncoderModel", None, "component"),
    ("Alpha-VLLM/Lumina-T2I", "lumina-t2i", {"consolidated.00-of-01.safetensors", "model_args.pth"}, "image"),
    ("meta-llama/Llama-2-7b-hf", "LlamaModel", None, "component"),
    ("stabilityai/sdxl-vae", "lumina-t2i", {"config.json", "diffusion_pytorch_model.safetensors"}, "component"),
    ("Alpha-VLLM/Lumina-T2Audio", "lumina-audio",
     {"audio_generation/324.ckpt", "bigvgan/best_netG.pt", "bigvgan/args.yml"}, "audio"),
    ("Alpha-VLLM/Lumina-T2Music", "lumina-audio",
     {"music_generation/*.ckpt", "bigvnat/best_netG.pt", "bigvnat/args.yml"}, "music"),
    ("google-bert/bert-base-uncased", "lumina-audio",
     {"config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"}, "component"),
    # Wan2.1-Fun: each repo's transformer only (not its .pth pickles); the components from the Wan-AI repos.
    ("alibaba-pai/Wan2.1-Fun-1.3B-InP", "wan-fun-inp", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-14B-InP", "wan-fun-inp", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-V1.1-1.3B-InP", "wan-fun-inp", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-V1.1-14B-InP", "wan-fun-inp", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-1.3B-Control", "wan-fun-control", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-14B-Control", "wan-fun-control", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-V1.1-1.3B-Control", "wan-fun-control", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-V1.1-14B-Control", "wan-fun-control", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-V1.1-1.3B-Control-Camera", "wan-fun-camera", FUN_FILES, "video"),
    ("alibaba-pai/Wan2.1-Fun-V1.1-14B-Control-Camera", "wan-fun-camera", FUN_FILES, "video"),
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan-fun",
     {"text_encoder/*.json", "text_encoder/*.safetensors", "tokenizer/*", "vae/config.json",
      "vae/diffusion_pytorch_model.safetensors"}, "component"),
    ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "wan-fun",
     {"image_encoder/*.json", "image_encoder/*.safetensors", "image_processor/*"}, "component"),
    ("google/flan-t5-large", "lumina-audio",
     {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"},
     "component"),
]


@pytest.fixture(scope="module")
def registry() -> CardRegistry:
    return CardRegistry.load([SHIPPED])


def card_for(registry: CardRegistry, repo: str, loader: str, files: set[str] | None) -> ModelCard:
    matches = [
        c for c in registry.cards.values()
        if c.source.repo == repo and c.pipeline == loader
        and c.transformer_gguf is None  # a GGUF variant of the checkpoint is not another card for it
        and (files is None or set(c.allow_patterns or ()) == files)
    ]
    assert len(matches) == 1, f"expected one card for {repo} ({loader}, {files}), found {[c.id for c in matches]}"
    return matches[0]


def catalogue_cards(registry: CardRegistry) -> list[ModelCard]:
    return [card_for(registry, repo, loader, files) for repo, loader, files, _ in CATALOGUE]


def test_every_card_loads_with_no_problems(registry):
    assert registry.problems == []
    assert len(registry.cards) >= len(CATALOGUE) + len(RUNNABLE_TODAY)


@pytest.mark.parametrize(("repo", "loader", "files", "task"), CATALOGUE,
                         ids=[f"{r}:{sorted(f)[0] if f else ''}" for r, _, f, _ in CATALOGUE])
def test_each_checkpoint_has_a_card_with_its_exact_repo(registry, repo, loader, files, task):
    card = card_for(registry, repo, loader, files)
    assert card.tasks == [task]
    assert card.homepage == f"https://huggingface.co/{repo}"


def test_component_cards_are_in_no_generation_list(registry):
    components = [c for c in registry.cards.values() if "component" in c.tasks]
    assert {c.id for c in components} >= {"llamagen-vq-ds16-c2i", "infinity-vae-d32reg"}
    for card in components:
        assert card.tasks == ["component"] and "component" in card.title.lower()
        for task in ("image", "video", "audio", "music"):
            assert card not in registry.for_task(task)


def test_every_card_names_a_loader_that_exists(registry):
    for card in registry.cards.values():
        if card.library == "diffusers":
            cls = getattr(diffusers, card.pipeline, None)
            assert isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline), card.id
        elif card.library == "transformers":
            cls = getattr(transformers, card.pipeline, None)
            assert isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel), card.id
        elif card.lora is not None:  # a LoRA card: loaded into a model of its family (runtime/lora.py)
            assert card.pipeline == "lora" and card.tasks == ["lora"] and not card.runnable, card.id
        elif gguf_file_card(card):  # a file a GGUF card's transformer loads from: the class it loads as
            cls = getattr(diffusers, card.pipeline, None)
            assert isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin), card.id
        else:
            assert card.pipeline in NATIVE_ENGINES, card.id


def gguf_file_card(card: ModelCard) -> bool:
    return (not card.runnable and card.tasks == ["component"] and bool(card.allow_patterns)
            and all(p.endswith(".gguf") for p in card.allow_patterns))


def test_real_models_name_a_hub_repo_and_page(registry):
    for card in registry.cards.values():
        if card.tiny:
            assert card.source.builtin and card.source.repo is None, card.id
            continue
        assert card.source.repo and card.source.builtin is None, card.id
        assert card.homepage == f"https://huggingface.co/{card.source.repo}", card.id


def remote(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(path=p, size=1, etag=f"e{i}", lfs=True) for i, p in enumerate(paths)]


# Repo listings as the research notes record them (HF tree pages, LlamaGen README).
LLAMAGEN_REPO = remote("vq_ds16_c2i.pt", "vq_ds8_c2i.pt", "c2i_B_256.pt", "c2i_B_384.pt", "c2i_L_256.pt",
                       "c2i_L_384.pt", "c2i_XL_384.pt", "c2i_XXL_384.pt", "c2i_3B_384.pt", "README.md")
LLAMAGEN_T2I_REPO = remote("vq_ds16_t2i.pt", "t2i_XL_stage1_256.pt", "t2i_XL_stage2_512.pt")
INFINITY_REPO = remote("infinity_2b_reg.pth", "infinity_vae_d32reg.pth", "infinity_vae_d16.pth",
                       "infinity_vae_d24.pth", "infinity_vae_d32.pth", "infinity_vae_d64.pth",
                       "infinity_125M_256x256.pth", "infinity_8b_512x512_weights/model-00001-of-00008.safetensors",
                       "README.md")
MULTI_CHECKPOINT_REPOS = {"FoundationVision/LlamaGen": LLAMAGEN_REPO, "peizesun/llamagen_t2i": LLAMAGEN_T2I_REPO,
                          "FoundationVision/Infinity": INFINITY_REPO}


def test_a_download_from_a_multi_checkpoint_repo_fetches_exactly_the_cards_files(registry):
    # These repos hold many multi-GB pickled checkpoints: a card fetches its own files and nothing else.
    checked = 0
    for card in registry.cards.values():
        listing = MULTI_CHECKPOINT_REPOS.get(card.source.repo)
        if listing is None:
            continue
        assert not any(ch in p for p in card.allow_patterns or ["*"] for ch in "*?["), card.id
        assert {f.path for f in select_files(listing, card)} == set(card.allow_patterns), card.id
        checked += 1
    assert checked == 13  # LlamaGen's 6, Infinity's 2 transformers and 5 VAEs


def test_stable_audio_fetches_the_diffusers_folders_not_the_single_file_copy(registry):
    card = card_for(registry, "stabilityai/stable-audio-open-1.0", "StableAudioPipeline", None)
    listing = remote("model.safetensors", "model.ckpt", "model_config.json", "model_index.json",
                     "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
                     "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                     "projection_model/config.json", "projection_model/diffusion_pytorch_model.safetensors",
                     "text_encoder/config.json", "text_encoder/model.safetensors",
                     "tokenizer/spiece.model", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json")
    chosen = {f.path for f in select_files(listing, card)}
    assert chosen == {f.path for f in listing} - {"model.safetensors", "model.ckpt", "model_config.json"}


def test_gated_flags(registry):
    assert card_for(registry, "stabilityai/stable-audio-open-1.0", "StableAudioPipeline", None).gated
    assert card_for(registry, "meta-llama/Llama-2-7b-hf", "LlamaModel", None).gated  # Lumina-T2I's text encoder
    # The ungated alternatives must not send the user off to accept terms.
    for repo in ("cvssp/audioldm2", "facebook/musicgen-small", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"):
        assert not any(c.gated for c in registry.cards.values() if c.source.repo == repo), repo


def test_cards_the_studio_cannot_run_yet_are_listed_not_hidden(registry):
    for card in catalogue_cards(registry):
        assert card.runnable is (card.id in RUNNABLE_NOW), card.id
    for card_id in RUNNABLE_TODAY:
        assert registry.get(card_id).runnable is True
    # Listed, never hidden: a not-yet-runnable model still shows in its task's list, after the runnable ones.
    images = registry.for_task("image")
    assert {"llamagen-vq-ds16-c2i", "infinity-2b", "lumina-t2i"} <= {c.id for c in registry.cards.values()}
    assert {"infinity-2b", "lumina-t2i"} <= {c.id for c in images}
    assert [not c.runnable for c in images] == sorted(not c.runnable for c in images)
    assert any(c.pipeline == "WanPipeline" for c in registry.for_task("video"))
    assert any(c.pipeline == "StableAudioPipeline" for c in registry.for_task("audio"))
    assert any(c.pipeline.startswith("Musicgen") for c in registry.for_task("music"))


def test_defaults_fit_the_card(registry):
    for card in registry.cards.values():
        d = card.defaults
        if "width" in d:
            assert card.size_problem(d["width"], d["height"]) is None, card.id
            assert f"{d['width']}x{d['height']}" in card.resolutions, card.id
        for res in card.resolutions:
            assert card.size_problem(*parse_size(res)) is None, card.id
        if "video" in card.tasks:
            assert {"width", "height", "frames", "fps", "steps", "cfg"} <= d.keys(), card.id
            assert d["frames"] % 4 == 1, card.id  # Wan and CogVideoX VAEs take 4k+1 frames
            assert card.size_multiple == 16, card.id
        if "audio" in card.tasks or "music" in card.tasks:
            assert {"seconds", "cfg"} <= d.keys(), card.id
            assert d["seconds"] <= d.get("max_seconds", float("inf")), card.id


def test_model_facts_a_user_relies_on(registry):
    wan_small = card_for(registry, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "WanPipeline", None)
    assert wan_small.defaults == {"width": 832, "height": 480, "frames": 81, "fps": 16, "steps": 50,
                                  "cfg": 6.0, "shift": 3.0, "strength": 0.8}
    for repo in ("THUDM/CogVideoX-2b", "THUDM/CogVideoX-5b"):
        cog = card_for(registry, repo, "CogVideoXPipeline", None)
        assert (cog.defaults["width"], cog.defaults["height"], cog.defaults["frames"], cog.defaults["fps"]) == \
            (720, 480, 49, 8)
    for card in registry.cards.values():
        if card.family == "musicgen" and not card.tiny:  # the tiny one is our own random weights
            assert card.license == "cc-by-nc-4.0" and card.defaults["max_seconds"] == 30
    stable_audio = card_for(registry, "stabilityai/stable-audio-open-1.0", "StableAudioPipeline", None)
    assert stable_audio.defaults["max_seconds"] == 47
    # Bigger models of a family need more memory.
    by_repo = {c.source.repo: c for c in registry.cards.values() if c.allow_patterns is None}
    assert by_repo["Wan-AI/Wan2.1-T2V-14B-Diffusers"].memory_gb > by_repo["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"].memory_gb
    assert by_repo["THUDM/CogVideoX-5b"].memory_gb > by_repo["THUDM/CogVideoX-2b"].memory_gb
    assert by_repo["facebook/musicgen-medium"].memory_gb > by_repo["facebook/musicgen-small"].memory_gb
