"""Presets and styles: the shipped library, style application, the user's own presets, import and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from studio.errors import InvalidInput
from studio.history import HistoryStore
from studio.history.user_presets import NameTaken, UserPresets
from studio.preset_checks import task_problem
from studio.preset_files import MAX_IMPORT_BYTES, export_user, fooocus_name, parse_import
from studio.presets import MODALITIES, Preset, PresetLibrary, Style, apply_style, merge_prompt, preset_problem
from studio.settings import REPO_ROOT

SHIPPED = REPO_ROOT / "presets"

CINEMATIC = Style(name="Cinematic", prompt="cinematic film still of {prompt}, shallow depth of field",
                  negative_prompt="cartoon")


# -- the shipped library ---------------------------------------------------------------------------


def test_every_shipped_preset_file_exists_and_loads_cleanly():
    missing = [f"{m}.yaml" for m in MODALITIES if not (SHIPPED / f"{m}.yaml").is_file()]
    missing += [] if (SHIPPED / "styles.yaml").is_file() else ["styles.yaml"]
    assert not missing, f"shipped preset files missing from {SHIPPED}: {missing}"

    library = PresetLibrary.load(SHIPPED, check=task_problem)
    assert [str(p) for p in library.problems] == []
    for modality in MODALITIES:
        presets = library.presets(modality)
        assert len(presets) >= 20, f"{modality}.yaml has only {len(presets)} presets"
        assert all(p.source == "builtin" and p.id is None and p.category for p in presets)
    assert library.styles("image"), "styles.yaml has no image styles"
    for style in library.styles():
        styled, _ = apply_style(style, "a red fox in the snow", "")
        assert "a red fox in the snow" in styled, style.name


def test_a_malformed_preset_file_is_reported_by_file_and_entry_while_the_rest_loads(tmp_path: Path):
    (tmp_path / "image.yaml").write_text(yaml.safe_dump({"modality": "image", "presets": [
        {"title": "Fox", "category": "Animals", "prompt": "a red fox", "params": {"width": 1024}},
        {"title": "Bad size", "prompt": "a hill", "params": {"width": -5}},
        {"title": "Typo", "prompt": "a lake", "params": {"stesp": 30}},
        {"title": "Fox", "prompt": "another fox"},
    ]}), encoding="utf-8")
    (tmp_path / "video.yaml").write_text("modality: video\npresets: [title: oops\n", encoding="utf-8")
    (tmp_path / "audio.yaml").write_text("modality: music\npresets: []\n", encoding="utf-8")
    (tmp_path / "music.yaml").write_text(yaml.safe_dump({"modality": "music", "presets": [
        {"title": "Rain", "prompt": "rain on a tin roof", "params": {"seconds": 10}}]}), encoding="utf-8")
    (tmp_path / "styles.yaml").write_text(yaml.safe_dump({"styles": [
        {"name": "Plain", "prompt": "no placeholder here"},
        {"name": "Ink", "prompt": "ink drawing of {prompt}", "modalities": ["image"]}]}), encoding="utf-8")
    (tmp_path / "imgae.yaml").write_text("modality: image\npresets: []\n", encoding="utf-8")

    library = PresetLibrary.load(tmp_path, check=task_problem)
    problems = [str(p) for p in library.problems]

    assert [p.title for p in library.presets("image")] == ["Fox"]
    assert [p.title for p in library.presets("music")] == ["Rain"]
    assert [s.name for s in library.styles("image")] == ["Ink"]
    assert library.presets("video") == [] and library.presets("audio") == []

    def problem(start: str) -> str:
        found = [p for p in problems if p.startswith(start)]
        assert found, f"no problem starting {start!r} in {problems}"
        return found[0]

    assert "params.width" in problem("image.yaml: preset 2 'Bad size'")
    assert "greater than 0" in problem("image.yaml: preset 2 'Bad size'")
    assert "params.stesp: not a parameter of this task" in problem("image.yaml: preset 3 'Typo'")
    assert "already used" in problem("image.yaml: preset 4 'Fox'")
    assert "not valid YAML" in problem("video.yaml")
    assert "'music'" in problem("audio.yaml")
    assert "{prompt}" in problem("styles.yaml: style 1 'Plain'")
    assert "not a preset file" in problem("imgae.yaml")
    assert len(problems) == 7


def test_a_missing_presets_folder_is_a_problem_not_a_crash(tmp_path: Path):
    library = PresetLibrary.load(tmp_path / "nowhere", check=task_problem)
    assert library.presets("image") == [] and library.styles() == []
    assert "does not exist" in str(library.problems[0])


# -- checking presets against their task --------------------------------------------------------------


@pytest.mark.parametrize(("modality", "preset", "expected"), [
    ("image", Preset(title="t", prompt="a fox", params={"width": 0}), "params.width: Input should be greater than 0"),
    ("image", Preset(title="t", prompt="a fox", params={"seed": 3}), "seed cannot be set by a preset"),
    ("image", Preset(title="t", params={"width": 1024}), "needs a prompt"),
    ("video", Preset(title="t", prompt="waves", params={"frames": "many"}), "params.frames: Input should be"),
    ("audio", Preset(title="t", prompt="rain", params={"pitch": 2}), "params.pitch: not a parameter of this task"),
    ("compositional", Preset(title="t", params={"grid_rows": 2, "grid_cols": 2, "captions": ["a", "b"]}),
     "params: a 2x2 grid has 4 cells, so it needs 4 captions"),
    ("compositional", Preset(title="t", prompt="x", params={"grid_rows": 1, "grid_cols": 2, "captions": ["a", "b"]}),
     "has no prompt"),
    ("anagrams", Preset(title="t", params={"prompts": ["a cat", "a dog"], "views": ["identity", "sideways"]}),
     "params.views: unknown view 'sideways'"),
    ("sculpture", Preset(title="t", prompt="x"), "unknown modality"),
])
def test_a_bad_preset_gets_the_tasks_own_message(modality: str, preset: Preset, expected: str):
    assert expected in (preset_problem(modality, preset, check=task_problem) or "")


def test_good_presets_of_derived_prompt_tabs_pass():
    assert preset_problem("compositional", Preset(
        title="t", params={"grid_rows": 1, "grid_cols": 2, "captions": ["sky", "sea"]}),
        check=task_problem) is None
    assert preset_problem("anagrams", Preset(
        title="t", params={"prompts": ["a cat", "a dog"], "views": ["identity", "rotate_180"]}),
        check=task_problem) is None


# -- applying a style ------------------------------------------------------------------------------


def test_style_puts_the_prompt_in_place_and_joins_the_negatives():
    assert apply_style(CINEMATIC, "a red fox", "blurry") == (
        "cinematic film still of a red fox, shallow depth of field", "blurry, cartoon")
    assert apply_style(CINEMATIC, "a red fox", "")[1] == "cartoon"
    plain = Style(name="Plain", prompt="{prompt}, analog film")
    assert apply_style(plain, "a red fox", "blurry") == ("a red fox, analog film", "blurry")
    assert apply_style(plain, "", "") == ("analog film", "")


def test_style_with_an_empty_prompt_leaves_no_stray_separators():
    assert apply_style(CINEMATIC, "  ", "")[0] == "cinematic film still of, shallow depth of field"
    middle = Style(name="m", prompt="masterpiece, {prompt}, soft light")
    assert apply_style(middle, "", "")[0] == "masterpiece, soft light"


def test_a_template_without_placeholder_is_appended_like_a1111():
    assert merge_prompt("oil painting, thick brush strokes", "a fox") == "a fox, oil painting, thick brush strokes"
    assert merge_prompt("oil painting", "") == "oil painting"
    # Imported A1111 rows without {prompt} give the same result as in A1111.
    style = parse_import("styles.csv", b"name,prompt,negative_prompt\nOil,oil painting,photo\n",
                         check=task_problem).styles[0]
    assert apply_style(style, "a fox", "blurry") == ("a fox, oil painting", "blurry, photo")


def test_a_style_of_ours_must_say_where_the_prompt_goes():
    with pytest.raises(ValidationError, match=r"\{prompt\}"):
        Style(name="x", prompt="oil painting")


# -- the user's own presets ---------------------------------------------------------------------------


@pytest.fixture
def user(db_url):
    """The user's presets on each backend: a SQLite file, then a fresh PostgreSQL database."""
    store = HistoryStore(db_url)
    yield UserPresets(store.engine, check=task_problem)
    store.close()


def test_user_preset_crud(user: UserPresets):
    fox = Preset(title="Fox", category="Animals", prompt="a red fox", negative_prompt="blurry",
                 params={"width": 1024, "height": 768})
    fox_id = user.add_preset("image", fox)
    user.add_preset("image", Preset(title="Owl", category="Animals", prompt="an owl"))
    user.add_preset("video", Preset(title="Fox", prompt="a fox running"))  # same title, other tab: fine

    listed = user.presets("image")
    assert [p.title for p in listed] == ["Fox", "Owl"]
    assert listed[0].source == "user" and listed[0].id == fox_id
    assert listed[0].params == {"width": 1024, "height": 768} and listed[0].negative_prompt == "blurry"

    user.update_preset(fox_id, fox.model_copy(update={"title": "Arctic fox", "prompt": "a white fox"}))
    first = user.presets("image")[0]
    assert (first.title, first.prompt, first.id) == ("Arctic fox", "a white fox", fox_id)

    with pytest.raises(NameTaken, match="already an image preset named 'Owl'"):
        user.add_preset("image", Preset(title="Owl", prompt="another owl"))
    with pytest.raises(ValueError):  # NameTaken is a ValueError too
        user.update_preset(fox_id, Preset(title="Owl", prompt="x"))
    replaced = user.add_preset("image", Preset(title="Owl", prompt="a snowy owl"), replace=True)
    assert [p.prompt for p in user.presets("image") if p.id == replaced] == ["a snowy owl"]

    assert user.delete(fox_id) is True and user.delete(fox_id) is False
    assert [p.title for p in user.presets("image")] == ["Owl"]
    assert [p.title for p in user.presets("video")] == ["Fox"]


def test_a_bad_user_preset_is_refused_with_the_tasks_message(user: UserPresets):
    with pytest.raises(InvalidInput, match=r"params\.steps: Input should be greater than or equal to 1"):
        user.add_preset("image", Preset(title="Zero", prompt="a fox", params={"steps": 0}))
    with pytest.raises(InvalidInput, match="needs a prompt"):
        user.add_preset("music", Preset(title="Empty"))
    good = user.add_preset("image", Preset(title="Ok", prompt="a fox"))
    with pytest.raises(InvalidInput, match="params.cfg"):
        user.update_preset(good, Preset(title="Ok", prompt="a fox", params={"cfg": -1}))
    assert [p.title for p in user.presets("image")] == ["Ok"] and user.presets("music") == []


def test_user_style_crud(user: UserPresets):
    ink = user.add_style(Style(name="Ink", prompt="ink drawing of {prompt}", modalities=["image"]))
    user.add_style(Style(name="Lo-fi", prompt="{prompt}, lo-fi tape hiss", modalities=["audio", "music"]))
    assert [s.name for s in user.styles()] == ["Ink", "Lo-fi"]
    assert [s.name for s in user.styles("music")] == ["Lo-fi"]
    with pytest.raises(NameTaken, match="already a style named 'Ink'"):
        user.add_style(Style(name="Ink", prompt="{prompt}"))
    user.update_style(ink, Style(name="Ink wash", prompt="ink wash painting of {prompt}", negative_prompt="photo"))
    style = user.styles("image")[0]
    assert (style.name, style.negative_prompt, style.id, style.modalities) == ("Ink wash", "photo", ink,
                                                                              ["image", "video"])
    assert user.delete(ink) and [s.name for s in user.styles()] == ["Lo-fi"]


# -- import and export --------------------------------------------------------------------------------


def _fill(user: UserPresets) -> None:
    user.add_preset("image", Preset(title="Fox", category="Animals", prompt="a red fox, 'quoted'",
                                    negative_prompt="blurry", params={"width": 1024, "cfg": 4.5}))
    user.add_preset("compositional", Preset(title="Sky and sea", params={
        "grid_rows": 2, "grid_cols": 1, "captions": ["a stormy sky", "a calm sea\nwith one boat"]}))
    user.add_style(Style(name="Ink", prompt="ink drawing of {prompt}", negative_prompt="photo",
                         modalities=["image"]))


def _contents(user: UserPresets) -> tuple[list, list]:
    presets = [(m, p.model_dump(exclude={"id"})) for m, p in user.all_presets()]
    styles = [s.model_dump(exclude={"id"}) for s in user.styles()]
    return presets, styles


@pytest.mark.parametrize("as_json", [False, True])
def test_export_round_trips_through_import(user: UserPresets, tmp_path: Path, as_json: bool):
    _fill(user)
    exported = export_user(user.all_presets(), user.styles())
    assert yaml.safe_load(exported)["studio_presets"] == 1
    name, data = "mine.yaml", exported.encode()
    if as_json:
        name, data = "mine.json", json.dumps(yaml.safe_load(exported)).encode()
    result = parse_import(name, data, check=task_problem)
    assert result.problems == [] and result.format == "Studio export"

    other = HistoryStore(tmp_path / "other.db")
    try:
        fresh = UserPresets(other.engine, check=task_problem)
        assert fresh.import_result(result) == (3, [])
        assert _contents(fresh) == _contents(user)
        # Importing again: everything is a duplicate, skipped and said so; with replace it overwrites.
        written, problems = fresh.import_result(result)
        assert written == 0 and len(problems) == 3 and "'Fox' already exists" in problems[0]
        assert fresh.import_result(result, replace=True) == (3, [])
    finally:
        other.close()


def test_import_of_our_format_keeps_good_entries_and_lists_bad_ones(user: UserPresets):
    text = yaml.safe_dump({"studio_presets": 1, "presets": {
        "image": [{"title": "Ok", "prompt": "a fox"}, {"title": "Bad", "prompt": "a fox", "params": {"seed": 1}}],
        "holograms": [{"title": "x", "prompt": "y"}]},
        "styles": [{"name": "Ink", "prompt": "ink of {prompt}"}, {"name": "No place", "prompt": "ink"}]})
    result = parse_import("mine.yaml", text.encode(), check=task_problem)
    assert [(m, p.title) for m, p in result.presets] == [("image", "Ok")]
    assert [s.name for s in result.styles] == ["Ink"]
    assert len(result.problems) == 3
    assert any(p.startswith("image preset 2 'Bad'") and "seed" in p for p in result.problems)
    assert any("holograms" in p for p in result.problems)
    assert any(p.startswith("style 2 'No place'") for p in result.problems)
    assert user.import_result(result) == (2, [])


def test_a1111_styles_csv(user: UserPresets):
    csv_text = ('\ufeffname,prompt,negative_prompt\r\n'
                'Cinematic,"cinematic still of {prompt}, 35mm","cartoon, ""anime"""\r\n'
                'Two lines,"{prompt}\r\nsecond line",\r\n'
                ',orphan prompt,\r\n'
                'Only negative,,"lowres"\r\n'
                'Empty,,\r\n')
    result = parse_import("styles.csv", csv_text.encode("utf-8"), check=task_problem)
    assert result.format == "A1111 styles.csv"
    by_name = {s.name: s for s in result.styles}
    assert list(by_name) == ["Cinematic", "Two lines", "Only negative"]  # the BOM did not eat the 'name' column
    assert by_name["Cinematic"].negative_prompt == 'cartoon, "anime"'
    assert by_name["Two lines"].prompt == "{prompt}\r\nsecond line"
    assert by_name["Only negative"].prompt == "{prompt}"
    assert apply_style(by_name["Only negative"], "a fox", "blurry") == ("a fox", "blurry, lowres")
    assert result.problems == ["row 3: no name; skipped",
                               "row 5 'Empty': has neither a prompt nor a negative prompt, so it would change nothing"]
    assert all(s.modalities == ["image", "video"] and s.source == "user" for s in result.styles)
    assert user.import_result(result) == (3, [])


def test_a1111_legacy_text_column():
    result = parse_import("styles.csv", b"name,text\nOld style,old {prompt} style\n", check=task_problem)
    assert [(s.name, s.prompt) for s in result.styles] == [("Old style", "old {prompt} style")]


def test_fooocus_style_json():
    data = json.dumps([
        {"name": "sai-3d-model", "prompt": "professional 3d model {prompt}", "negative_prompt": "ugly"},
        {"name": "Fooocus Sharp", "negative_prompt": "(worst quality, low quality), blurry"},
        {"name": "mre-dark-cyberpunk", "prompt": "dark cyberpunk {prompt}"},
        {"prompt": "no name {prompt}"},
    ]).encode()
    result = parse_import("sdxl_styles_custom.json", data, check=task_problem)
    assert result.format == "Fooocus styles"
    assert [s.name for s in result.styles] == ["SAI 3D Model", "Fooocus Sharp", "MRE Dark Cyberpunk"]
    sharp = result.styles[1]
    assert apply_style(sharp, "a fox", "") == ("a fox", "(worst quality, low quality), blurry")
    assert result.problems == ["entry 4: needs a name"]
    assert fooocus_name("ads-corporate (sunny)") == "Ads Corporate (Sunny)"


def test_invokeai_style_json():
    data = json.dumps([
        {"name": "Anime", "positive_prompt": "anime artwork of {prompt}", "negative_prompt": "photo"},
        {"name": "Painterly", "prompt": "painterly, impasto", "negative_prompt": ""},
        {"name": "   ", "positive_prompt": "x {prompt}"},
    ]).encode()
    result = parse_import("presets.json", data, check=task_problem)
    assert result.format == "InvokeAI style presets"
    assert [(s.name, s.prompt) for s in result.styles] == [("Anime", "anime artwork of {prompt}"),
                                                           ("Painterly", "{prompt} painterly, impasto")]
    # InvokeAI appends a placeholder-less template after the prompt with a space.
    assert apply_style(result.styles[1], "a fox", "")[0] == "a fox painterly, impasto"
    assert result.problems == ["entry 3: needs a name"]


def test_oversize_and_malformed_files_are_refused_with_a_clear_message():
    with pytest.raises(InvalidInput, match="at most 5 MB"):
        parse_import("huge.csv", b"name,prompt\n" + b"x" * MAX_IMPORT_BYTES, check=task_problem)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_import("styles.json", b'[{"name": "x",', check=task_problem)
    with pytest.raises(InvalidInput, match="not valid YAML"):
        parse_import("mine.yaml", b"presets: [title: oops\n", check=task_problem)
    with pytest.raises(InvalidInput, match="not a styles CSV"):
        parse_import("styles.csv", b"title,body\nA,B\n", check=task_problem)
    with pytest.raises(InvalidInput, match="not a preset or style file"):
        parse_import("other.json", b'{"hello": "world"}', check=task_problem)
    with pytest.raises(InvalidInput, match="not UTF-8"):
        parse_import("styles.csv", "name,prompt\nCafé,{prompt}\n".encode("utf-16"), check=task_problem)
