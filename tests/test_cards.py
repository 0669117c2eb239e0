from pathlib import Path

from studio.settings import REPO_ROOT
from studio.zoo.cards import CardRegistry

SHIPPED = REPO_ROOT / "model_zoo"

GOOD = """
id: my-model
title: My model
family: lumina-next
tasks: [image]
source: {repo: someone/my-model}
pipeline: LuminaPipeline
memory_gb: 3
license: apache-2.0
resolutions: [1024x1024]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_card_loads():
    registry = CardRegistry.load([SHIPPED])
    assert registry.problems == []
    assert {"tiny-lumina-next", "tiny-lumina2", "lumina-next-sft", "lumina-image-2"} <= set(registry.cards)
    for card in registry.cards.values():
        assert card.title and card.license and card.memory_gb > 0
        if card.tiny:
            assert "random weights" in card.title  # labelled honestly wherever the title shows


def test_real_cards_name_their_repos():
    registry = CardRegistry.load([SHIPPED])
    assert registry.get("lumina-next-sft").source.repo == "Alpha-VLLM/Lumina-Next-SFT-diffusers"
    assert registry.get("lumina-next-sft").pipeline == "LuminaPipeline"
    assert registry.get("lumina-image-2").source.repo == "Alpha-VLLM/Lumina-Image-2.0"
    assert registry.get("lumina-image-2").pipeline == "Lumina2Pipeline"


def test_malformed_cards_are_reported_by_file_and_reason_and_the_rest_load(tmp_path):
    write(tmp_path, "good.yaml", GOOD)
    bad_yaml = write(tmp_path, "broken.yaml", "id: [unclosed\n")
    missing = write(tmp_path, "missing.yaml", "id: x\ntitle: X\n")
    both = write(tmp_path, "both.yaml", GOOD.replace("my-model}", "my-model, builtin: tiny-lumina-next}")
                 .replace("id: my-model", "id: both"))
    size = write(tmp_path, "size.yaml", GOOD.replace("id: my-model", "id: odd").replace("1024x1024", "1000x1000"))
    dup = write(tmp_path, "z-dup.yaml", GOOD)
    listy = write(tmp_path, "list.yaml", "- a\n- b\n")

    registry = CardRegistry.load([tmp_path])

    assert set(registry.cards) == {"my-model"}
    reasons = {p.file: p.reason for p in registry.problems}
    assert set(reasons) == {bad_yaml, missing, both, size, dup, listy}
    assert "not valid YAML" in reasons[bad_yaml]
    assert "family" in reasons[missing] and "source" in reasons[missing]
    assert "exactly one of" in reasons[both]
    assert "multiples of 16" in reasons[size]
    assert "duplicate id" in reasons[dup]
    assert "mapping" in reasons[listy]
    assert str(missing) in str(registry.problems[[p.file for p in registry.problems].index(missing)])


def test_unknown_model_lists_the_known_ones():
    import pytest

    from studio.errors import UnknownModel

    registry = CardRegistry.load([SHIPPED])
    with pytest.raises(UnknownModel, match="Unknown model 'nope'.*tiny-lumina-next"):
        registry.get("nope")


def test_cards_for_a_task_list_real_then_tiny_then_not_yet_runnable():
    registry = CardRegistry.load([SHIPPED])
    image_cards = registry.for_task("image")
    ranks = [0 if c.runnable and not c.tiny else 1 if c.runnable else 2 for c in image_cards]
    assert ranks == sorted(ranks) and set(ranks) >= {0, 1}
    assert all("video" in c.tasks for c in registry.for_task("video"))
