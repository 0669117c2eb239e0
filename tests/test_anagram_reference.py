"""The Anagrams task against the authors' code (Lumina-T2X visual_anagrams/, snapshot 1c60696): the
two phases' steps term for term, the skip residual, the tiled VAE passes' geometry, the anagram
fork's RoPE and attention scale, and the published defaults. Reference formulas are restated here
from generate.py and models/nextdit.py (file:line in each test) and compared with Studio's code."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from studio.engines import anagram, lumina_next_anagram as fork
from studio.settings import REPO_ROOT
from studio.tasks.anagram import AnagramSpec, with_style
from studio.tasks.image import ImageSpec
from studio.zoo.cards import CardRegistry

CARDS = CardRegistry.load([REPO_ROOT / "model_zoo"])
NEXT, LUMINA2, SFT, MINI = (CARDS.get(c) for c in ("tiny-lumina-next", "tiny-lumina2", "lumina-next-sft",
                                                    "mini-lumina-next"))
NEGATIVE_CAP = ("blurry, ugly, duplicate, poorly drawn, deformed, mosaic, bad quality, bad detail, blurry-image, "
                "jpeg artifacts, bad contrast, bad anatomy, watermark, extra detail, chaotic distribution of objects, "
                "distortion")  # generate.py:23


def linear_velocities(count: int, channels: int = 4):
    gen = torch.Generator().manual_seed(5)
    weights = [torch.randn(channels, channels, generator=gen, dtype=torch.float64) for _ in range(count)]
    return [lambda z, t, w=w: torch.einsum("ij,bjhw->bihw", w, z) * (1 + t) + z.flip(-1) * t for w in weights]


# -- the skip residual and the two phases' steps ------------------------------------------------


def test_the_skip_residual_is_noise_at_t0_the_state_at_t1_and_the_cosine_mix_between():
    gen = torch.Generator().manual_seed(0)
    x, guidance, noise = (torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    assert torch.equal(anagram.skip_residual(x, 0.0, guidance, noise), noise)  # c = 1: t·g + (1-t)·z = z
    assert torch.allclose(anagram.skip_residual(x, 1.0, guidance, noise), x)  # c = 0 (cos π = -1)
    for t in (0.25, 0.5, 0.8):
        c = 0.5 * (1 + math.cos(math.pi * t))
        assert torch.allclose(anagram.skip_residual(x, t, guidance, noise),
                              (1 - c) * x + c * (t * guidance + (1 - t) * noise))
    assert torch.allclose(anagram.skip_residual(x, 0.5, guidance, noise), 0.5 * x + 0.25 * guidance + 0.25 * noise)


def reference_phase_step(solver, velocities, views, y, t0, t1):
    """generate.py:389-414 (phase 1) with :212-219 midpoint_solver: noise = -solver(viewed y), mapped
    back with inverse_view, averaged, subtracted."""
    noises = []
    for v, view in zip(velocities, views):
        viewed = view.forward(y)
        dt, half = t1 - t0, 0.5 * (t1 - t0)
        f0 = v(viewed, t0)
        noise = -(v(viewed + f0 * half, t0 + half) * dt)
        noises.append(view.inverse(noise))
    return y - torch.stack(noises).mean(dim=0)


def reference_refine_step(velocities, views, y, t0, t1, guidance, z):
    """generate.py:465-494 with :222-262 midpoint_solver_extra (anchor = ones)."""
    noises = []
    for v, view in zip(velocities, views):
        dt, half = t1 - t0, 0.5 * (t1 - t0)
        t_mid = t0 + half
        c = 0.5 * (1 + math.cos(math.pi * t0))
        f0 = v(view.forward((1 - c) * y + c * (t0 * guidance + (1 - t0) * z)), t0)
        y_mid = y - view.inverse(-f0 * half)
        c = 0.5 * (1 + math.cos(math.pi * t_mid))
        f_mid = v(view.forward((1 - c) * y_mid + c * (t_mid * guidance + (1 - t_mid) * z)), t_mid)
        noises.append(view.inverse(-(f_mid * dt)))
    return y - torch.stack(noises).mean(dim=0)


@pytest.mark.parametrize("names", [["identity", "rotate_180"], ["identity", "negate"],
                                   ["flip_vertical", "rotate_90", "negate"]])
def test_both_phases_step_as_the_reference_midpoint_solvers(names):
    views = [anagram.VIEWS[n] for n in names]
    velocities = linear_velocities(len(views))
    gen = torch.Generator().manual_seed(1)
    y, guidance, z = (torch.randn(1, 4, 6, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    for t0, t1 in ((0.0, 0.1), (0.3, 0.45), (0.9, 1.0)):
        assert torch.allclose(anagram.combined_step("midpoint", velocities, views, y, t0, t1),
                              reference_phase_step("midpoint", velocities, views, y, t0, t1))
        assert torch.allclose(anagram.refine_step("midpoint", velocities, views, y, t0, t1, guidance, z),
                              reference_refine_step(velocities, views, y, t0, t1, guidance, z))


class FakeFlows:
    """A TwoPhase of recorded pure-tensor stand-ins, to see what the sampler does in what order."""

    def __init__(self):
        self.calls: list[str] = []
        self.refine_inputs: list[tuple[float, torch.Tensor]] = []

    def model(self, views: int) -> anagram.TwoPhase:
        def latents(width, height):
            def draw(generator):
                self.calls.append(f"noise {width}")
                return torch.randn(1, 4, height // 8, width // 8, generator=generator)
            return draw

        def refine_velocity(x, t):
            self.refine_inputs.append((t, x))
            return torch.zeros_like(x)

        def encode(pixels, generator):
            self.calls.append(f"encode {pixels.shape[-1]}")
            return F.avg_pool2d(pixels, 8).mean(dim=1, keepdim=True).expand(-1, 4, -1, -1)

        def decode(z):
            self.calls.append(f"decode {z.shape[-1] * 8}")
            return F.interpolate(z[:, :3], scale_factor=8.0)

        return anagram.TwoPhase(
            init=anagram.Flow([lambda x, t: -x] * views, latents(32, 32), decode),
            refine=anagram.Flow([refine_velocity] * views, latents(64, 64), decode),
            encode=encode, init_size=(32, 32))


def test_the_sampler_runs_init_then_refine_on_the_authors_grid():
    from studio.engines.flow import time_shift

    flows = FakeFlows()
    seen = []
    result = anagram.sample(flows.model(2), view_names=["identity", "rotate_180"], width=64, height=64,
                            generator=torch.Generator().manual_seed(0), solver="euler", steps=5, shift=7.0,
                            on_step=lambda done, total: seen.append((done, total)))
    # Noise for the init phase, its preview decoded, the guidance encoded, then the refine noise (generate.py order).
    assert flows.calls == ["noise 32", "decode 32", "encode 64", "noise 64", "decode 64"]
    assert result.preview.size == (32, 32) and result.picture.size == (64, 64)
    assert result.evaluations == {"init": 4 * 2, "refine": 4 * 2} and result.solver_steps == 4
    assert seen == [(k, 10) for k in range(1, 11)]
    # linspace(0, 1, N) shifted (generate.py:378-385): N time points, N - 1 steps.
    grid = [float(v) for v in time_shift(torch.linspace(0, 1, 5), 7.0)]
    assert [t for t, _ in flows.refine_inputs[::2]] == pytest.approx(grid[:-1])
    # The first refine input is the refine noise itself (t = 0: c = 1), under each view.
    replay = torch.Generator().manual_seed(0)
    torch.randn(1, 4, 4, 4, generator=replay)  # the init noise
    noise = torch.randn(1, 4, 8, 8, generator=replay)
    assert torch.equal(flows.refine_inputs[0][1], noise)
    assert torch.equal(flows.refine_inputs[1][1], noise.rot90(2, (-2, -1)))


def test_the_readings_are_the_views_of_the_pixels():
    pixels = torch.rand(1, 3, 8, 16) * 2 - 1
    picture = anagram.to_picture(pixels)
    assert anagram.reading(pixels, anagram.VIEWS["rotate_180"]).tobytes() == picture.rotate(180).tobytes()
    negated = anagram.reading(pixels, anagram.VIEWS["negate"])
    assert all(abs(a + b - 255) <= 1 for a, b in zip(negated.tobytes(), picture.tobytes()))


# -- tiled VAE passes ------------------------------------------------------------------------------


def reference_views(height, width, window, stride):
    """generate.py:26-57 get_views."""
    nh = int((height - window) / stride - 1e-6) + 2 if height > window else 1
    nw = int((width - window) / stride - 1e-6) + 2 if width > window else 1
    views = []
    for i in range(nh * nw):
        h0, w0 = int((i // nw) * stride), int((i % nw) * stride)
        h1, w1 = h0 + window, w0 + window
        if h1 > height:
            h0, h1 = int(h0 + height - h1), int(height)
        if w1 > width:
            w0, w1 = int(w0 + width - w1), int(width)
        views.append((h0, h1, w0, w1))
    return views


@pytest.mark.parametrize("height, width", [(1024, 1024), (4096, 2048), (1280, 1536), (1040, 1024), (256, 512)])
def test_tiles_are_the_references_views(height, width):
    ours = [(t, b, left, r) for t, b in anagram.windows(height, 256) for left, r in anagram.windows(width, 256)]
    assert ours == reference_views(height, width, 256, 256)


def test_the_tile_geometry_at_1024_is_the_references():
    shapes = []

    def record(scale):
        def fn(tiles):
            shapes.append(tuple(tiles.shape))
            return torch.zeros(tiles.shape[0], 4 if scale < 1 else 3, int(tiles.shape[2] * scale),
                               int(tiles.shape[3] * scale))
        return fn

    # tiled_encode (generate.py:60-115): 256 px cores, 384 px of context, 4 tiles a call.
    assert anagram.tiled_encode(record(1 / 8), torch.zeros(1, 3, 1024, 1024), 1024).shape == (1, 4, 128, 128)
    assert shapes == [(4, 3, 1024, 1024)] * 4
    shapes.clear()
    # tiled_decode (:118-173): 32-latent cores, 48 of context.
    assert anagram.tiled_decode(record(8), torch.zeros(1, 4, 128, 128), 1024).shape == (1, 3, 1024, 1024)
    assert shapes == [(4, 4, 128, 128)] * 4


@pytest.mark.parametrize("height, width", [(64, 64), (96, 160), (40, 24)])
def test_tiling_keeps_what_a_local_operation_gives_on_the_whole(height, width):
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kernel = torch.rand(3, 3, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def blur(t):
        return F.conv2d(t, kernel, padding=1)  # a receptive field well inside the context

    assert torch.allclose(anagram.tiled(blur, x, core=16, pad=8), blur(x))
    assert torch.allclose(anagram.tiled(lambda t: F.avg_pool2d(blur(t), 8), x, core=16, pad=8, down=8),
                          F.avg_pool2d(blur(x), 8))
    assert torch.allclose(anagram.tiled(lambda t: F.interpolate(t, scale_factor=8.0), x, core=8, pad=4, up=8),
                          F.interpolate(x, scale_factor=8.0))


class RecordingVae:
    """What vae_two_phase calls on a VAE, recording the shape of every pass."""

    config = SimpleNamespace(scaling_factor=1.0, shift_factor=None)
    dtype = torch.float32

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def encode(self, x):
        self.calls.append(("encode", tuple(x.shape)))
        latents = torch.zeros(x.shape[0], 4, x.shape[2] // 8, x.shape[3] // 8)
        return SimpleNamespace(latent_dist=SimpleNamespace(sample=lambda generator: latents))

    def decode(self, z, return_dict=False):
        self.calls.append(("decode", tuple(z.shape)))
        return (torch.zeros(z.shape[0], 3, z.shape[2] * 8, z.shape[3] * 8),)


@pytest.mark.parametrize("tiled", [True, False])
def test_the_refine_phase_tiles_its_vae_passes_unless_turned_off(tiled):
    vae = RecordingVae()
    model = anagram.vae_two_phase(init=[], refine=[], latents=lambda w, h, g: torch.zeros(1, 4, h // 8, w // 8),
                                  vae=vae, device="cpu", native=64, width=64, height=64, multiple=16, tiled=tiled)
    assert model.encode(torch.zeros(1, 3, 64, 64), torch.Generator()).shape == (1, 4, 8, 8)
    assert model.refine.decode(torch.zeros(1, 4, 8, 8)).shape == (1, 3, 64, 64)
    if tiled:  # 16 cores of 16 px in 64 px tiles, 4 a call; the decode alike on the latents
        assert vae.calls == [("encode", (4, 3, 64, 64))] * 4 + [("decode", (4, 4, 8, 8))] * 4
    else:
        assert vae.calls == [("encode", (1, 3, 64, 64)), ("decode", (1, 4, 8, 8))]


def test_tiles_are_on_by_default_and_the_mini_card_turns_them_off():
    assert resolved(NEXT).option("vae_tiles") is True and resolved(SFT).option("vae_tiles") is True
    mini = resolved(MINI)
    # Nor style nor negative for the mini: words it never saw.
    assert (mini.option("vae_tiles"), mini.style, mini.negative_prompt) == (False, "", "")


def test_the_init_phase_samples_at_the_training_area():
    assert anagram.training_size(1024, 1024, 1024, 16) == (1024, 1024)
    assert anagram.training_size(4096, 4096, 1024, 16) == (1024, 1024)  # run.sh: 4096 through a 1024 init
    assert anagram.training_size(2048, 512, 1024, 16) == (2048, 512)
    width, height = anagram.training_size(2048, 1024, 1024, 16)
    assert width % 16 == height % 16 == 0
    assert abs(width * height / 1024**2 - 1) < 0.03 and abs(width / height - 2) < 0.05


# -- the anagram fork's RoPE and attention -----------------------------------------------------------


def test_the_refine_ntk_scale_is_used_only_above_the_training_size():
    assert fork.refine_rope_scale(1024, 1024, 1024, "time_aware") == 1.0
    assert fork.refine_rope_scale(512, 512, 1024, "time_aware") == 1.0
    assert fork.refine_rope_scale(2048, 2048, 1024, "time_aware") == 2.0
    assert fork.refine_rope_scale(4096, 1024, 1024, "time_aware") == 2.0
    assert fork.refine_rope_scale(2048, 2048, 1024, "none") == 1.0


def reference_ntk_v1(dim: int, end: int, scale: float) -> torch.Tensor:
    """nextdit.py:968-1047 precompute_freqs_cis with extra_mode 'ntk_v1'."""
    theta = 10000.0 * scale
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    freqs = torch.outer(torch.arange(end, dtype=torch.float), freqs).float()
    cis = torch.polar(torch.ones_like(freqs), freqs)
    h = cis.view(end, 1, dim // 4, 1).repeat(1, end, 1, 1)
    w = cis.view(1, end, dim // 4, 1).repeat(end, 1, 1, 1)
    return torch.cat([h, w], dim=-1).flatten(2)


@pytest.mark.parametrize("scale", [1.0, 2.0, 4.0])
def test_the_fork_rope_is_ntk_on_a_512_table(scale):
    ours = fork.fork_rope(16, scale)
    assert ours.shape[:2] == (512, 512)
    assert torch.allclose(ours, reference_ntk_v1(16, 512, scale), atol=1e-5)


def test_the_proportional_scale_is_log_not_its_square_root():
    # nextdit.py:333 (the Next demo and diffusers: the commented line above it, the square root).
    assert fork.fork_softmax_scale(16384, 4096, 64) == pytest.approx(math.log(16384, 4096) / 8)
    assert fork.fork_softmax_scale(4096, 4096, 64) == pytest.approx(1 / 8)
    assert fork.fork_softmax_scale(16384, None, 64) == pytest.approx(1 / 8)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, model_cache):
    from studio.runtime.loader import load_pipeline
    from studio.settings import Settings

    return load_pipeline(NEXT, Settings.load(env={}, home=tmp_path_factory.mktemp("h"), model_cache=model_cache))


def test_the_fork_self_attention_is_diffusers_but_for_the_scale(pipe):
    from diffusers.models.attention_processor import LuminaAttnProcessor2_0

    attn = pipe.transformer.layers[0].attn1
    gen = torch.Generator().manual_seed(6)
    tokens = 64
    hidden = torch.randn(2, tokens, attn.query_dim, generator=gen)
    mask = torch.ones(2, tokens, dtype=torch.bool)
    mask[1, -8:] = False
    rope = fork.fork_rope(pipe.transformer.head_dim, 1.0)[:8, :8].flatten(0, 1).unsqueeze(0)
    args = dict(hidden_states=hidden, encoder_hidden_states=hidden, attention_mask=mask, query_rotary_emb=rope,
                key_rotary_emb=rope)
    theirs, ours = LuminaAttnProcessor2_0(), fork.ForkSelfAttention()
    with torch.no_grad():
        assert torch.allclose(ours(attn, **args), theirs(attn, **args), atol=1e-6)
        for base in (tokens, 16, 256):
            # diffusers' √(log_b' N) equals the fork's log_b N for b' = N^(1 / log_b(N)²).
            same_scale = tokens ** (1 / math.log(tokens, base) ** 2)
            assert torch.allclose(ours(attn, **args, base_sequence_length=base),
                                  theirs(attn, **args, base_sequence_length=same_scale), atol=1e-6)


class FakeTransformer:
    """Records what each call is given (t, the RoPE table, the attention kwargs, the self-attention
    processors in use) and predicts zeros."""

    head_dim = 16
    config = SimpleNamespace(patch_size=2)

    def __init__(self):
        self.layers = [SimpleNamespace(attn1=SimpleNamespace(processor="diffusers")) for _ in range(2)]
        self.calls: list[tuple] = []

    def __call__(self, hidden_states, timestep, image_rotary_emb, cross_attention_kwargs, **_):
        self.calls.append((float(timestep[0]), image_rotary_emb, cross_attention_kwargs,
                           [layer.attn1.processor for layer in self.layers]))
        return (torch.zeros(hidden_states.shape[0], 8, *hidden_states.shape[2:]),)


def test_the_refine_velocity_uses_ntk_at_every_t_and_the_fork_attention_only_while_it_runs():
    from studio.engines.lumina_next import LuminaNextOptions

    pipe = SimpleNamespace(_execution_device="cpu", transformer=FakeTransformer())
    opts = LuminaNextOptions(solver="midpoint", steps=30, shift=7.0, cfg=8.0, cfg_mode="lumina",
                             rope_scaling="time_aware", watershed=None, proportional_attn=True)
    text = (torch.zeros(2, 3, 32), torch.ones(2, 3))
    velocity = fork.fork_velocity(pipe, *text, opts, rope_scale=2.0, base_length=4096)
    x = torch.zeros(1, 4, 8, 8)
    velocity(x, 0.1)
    velocity(x, 0.9)  # either side of the demo's 0.3 watershed: the same NTK table
    (_, rope0, kwargs0, procs0), (_, rope1, _, _) = pipe.transformer.calls
    # The corner of the fork's table that the 4x4 grid of 2x2 patches reads.
    assert torch.equal(rope0, rope1) and torch.equal(rope0, fork.fork_rope(16, 2.0)[:4, :4])
    assert kwargs0 == {"base_sequence_length": 4096}
    assert all(isinstance(p, fork.ForkSelfAttention) for p in procs0)
    assert [layer.attn1.processor for layer in pipe.transformer.layers] == ["diffusers", "diffusers"]
    fork.fork_velocity(pipe, *text, opts, rope_scale=1.0, base_length=None)(x, 0.5)
    _, rope, kwargs, procs = pipe.transformer.calls[-1]
    # init: neither
    assert torch.equal(rope, fork.fork_rope(16, 1.0)[:4, :4]) and kwargs == {} and procs == ["diffusers"] * 2


def test_the_pipelines_attention_comes_back_after_an_error(pipe):
    before = [layer.attn1.processor for layer in pipe.transformer.layers]
    with pytest.raises(RuntimeError):
        with fork.fork_attention(pipe.transformer):
            assert all(isinstance(layer.attn1.processor, fork.ForkSelfAttention) for layer in pipe.transformer.layers)
            raise RuntimeError("out of memory")
    assert [layer.attn1.processor for layer in pipe.transformer.layers] == before


# -- defaults and the style ----------------------------------------------------------------------------


def resolved(card, **params):
    return AnagramSpec.parse({"model": card.id, "prompts": ["an old man", "a campfire"],
                              "views": ["identity", "rotate_180"], "seed": 1, **params}).resolved(card)


@pytest.mark.parametrize("card", [NEXT, SFT], ids=["tiny", "sft"])
def test_lumina_next_anagrams_default_to_the_published_recipe(card):
    spec = resolved(card)
    assert (spec.cfg, spec.option("shift"), spec.steps, spec.style) == (8.0, 7.0, 30, "an oil painting of")
    assert spec.negative_prompt == NEGATIVE_CAP and spec.option("solver") == "midpoint"
    assert spec.option("watershed") is None  # the fork has no watershed: not an anagram option
    # ...for the anagram task only: an image on the same card keeps the demo's.
    image = ImageSpec.parse({"model": card.id, "prompt": "a cat", "seed": 1}).resolved(card)
    assert (image.cfg, image.option("shift"), image.option("watershed"), image.negative_prompt) == (4.0, 4.0, 0.3, "")


def test_a_given_value_wins_and_an_empty_negative_is_no_negative():
    spec = resolved(NEXT, cfg=5.0, shift=3.0, negative_prompt="", style="")
    assert (spec.cfg, spec.option("shift"), spec.negative_prompt, spec.style) == (5.0, 3.0, "", "")
    assert spec.styled() == ["an old man", "a campfire"]
    other = resolved(LUMINA2)  # another family: its card's and the task's
    assert (other.cfg, other.option("shift"), other.negative_prompt) == (4.0, 6.0, "")
    assert other.style == "an oil painting of"


@pytest.mark.parametrize("prompt, expected", [
    ("an old man", "an oil painting of an old man"),
    ("an oil painting of an old man", "an oil painting of an old man"),
    ("An Oil Painting of an old man", "An Oil Painting of an old man"),
    ("  an oil painting of, a man", "an oil painting of, a man"),
    ("an oil painting office", "an oil painting of an oil painting office"),
])
def test_the_style_is_put_before_a_prompt_once(prompt, expected):
    assert with_style("an oil painting of", prompt) == expected
    spec = resolved(NEXT, prompts=[prompt, "a campfire"])
    assert spec.styled()[0] == expected and spec.prompt.startswith(expected + " / ")
