"""Step caching for one job: diffusers' own cache hooks on a pipeline's transformer(s), by the job's `speed`.

A diffusion transformer's work changes little from one denoising step to the next, so some of it can
be reused. diffusers (0.42) ships the hooks; this module maps the studio's per-job `speed`
(`off | balanced | fast`) to one concrete hook config per method, installs it on every transformer of
the pipeline (`transformer`, and `transformer_2` where there is one) for the job only, and removes it
afterwards: the pipeline outlives the job in the memory scheduler, so a speed-off job after a
speed-on one runs exactly as if no cache had ever been installed.

The methods (a family picks one in its run hook; the numbers live here only):

- `first_block` — First Block Cache (ParaAttention's, after TeaCache). Each step runs the first
  block; when its residual changed by less than `threshold` (relative mean absolute difference) since
  the last full pass, the other blocks are skipped and their cached residual reused. Adaptive: how
  many passes it skips depends on the model. Balanced 0.05, fast 0.1 (the values diffusers' and
  ParaAttention's docs use for Wan/HunyuanVideo). It needs the pipeline to name its denoiser calls
  (`cache_context("cond" / "uncond")`), which WanPipeline and WanImageToVideoPipeline do. For a
  transformer diffusers gives no cache hooks (Lumina-Image 2.0's: no CacheMixin, its pipeline names
  no calls) the family asks `name_passes`: the same First Block Cache hooks are applied directly,
  its block class described to diffusers (`BLOCK_OUTPUTS`), and each call named by the text
  embedding it is given (the prompt's and the negative prompt's are fixed tensors for the run, so the
  conditional and unconditional passes each keep their own cache, even where Lumina's CFG
  truncation leaves the unconditional one out).
- `taylorseer` — TaylorSeer in its lite form: after 3 full warm-up steps, only every `interval`-th
  step runs the transformer's blocks; in between the output projection is extrapolated from the last
  full passes (first-order Taylor). A fixed schedule, so it saves on any model (First Block Cache
  skipped nothing on tiny CogVideoX, whose first-block residual moves by more than 20% a step).
  Lite keeps only the output projection's factors (a latent-sized tensor), not every block's: at
  CogVideoX-5B's size per-block factors would take gigabytes. Balanced every 2nd step, fast every 3rd.

What the job records (`used["step_cache"]`): the speed, the method and its setting, how many times
the transformer was called and how many of those ran its blocks in full.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..errors import InvalidInput

SPEEDS = ("off", "balanced", "fast")

# method -> speed -> the hook's setting. The one place these numbers live.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "first_block": {"balanced": {"threshold": 0.05}, "fast": {"threshold": 0.1}},
    "taylorseer": {"balanced": {"interval": 2}, "fast": {"interval": 3}},
}
METHOD_NAMES = {"first_block": "FirstBlockCache", "taylorseer": "TaylorSeerCache (lite)"}
TAYLORSEER_WARMUP = 3  # full steps before any is predicted (diffusers' default)

_BLOCK_LISTS = ("blocks", "transformer_blocks", "layers")
# Block classes diffusers' First Block Cache does not describe: which of their outputs is the hidden
# state (index) and which the text's (None: they return the hidden state alone).
BLOCK_OUTPUTS: dict[str, tuple[int, int | None]] = {"Lumina2TransformerBlock": (0, None)}


def hook_config(method: str, speed: str) -> Any:
    """A fresh diffusers cache config for `method` at `speed` (each model gets its own: the hooks keep state)."""
    setting = SETTINGS[method][speed]
    if method == "first_block":
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=setting["threshold"])
    import torch
    from diffusers.hooks import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(cache_interval=setting["interval"], disable_cache_before_step=TAYLORSEER_WARMUP,
                                 max_order=1, taylor_factors_dtype=torch.float32, use_lite_mode=True)


def denoisers(pipeline: Any) -> list[Any]:
    """The pipeline's diffusion transformers (Wan 2.2 has a second one for the low-noise steps)."""
    return [m for m in (getattr(pipeline, "transformer", None), getattr(pipeline, "transformer_2", None))
            if m is not None]


def can_cache(model: Any, method: str, name_passes: bool = False) -> str | None:
    """None when `method` can be installed on `model`, else why not (for the refusal)."""
    name = type(model).__name__
    if not callable(getattr(model, "enable_cache", None)) and not (name_passes and method == "first_block"):
        return f"{name} has no diffusers cache hooks (it is not a CacheMixin model)"
    if method == "first_block":
        from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

        blocks = _last_blocks(model)
        if blocks is None or len(blocks) < 2:
            return f"{name} has no list of at least two transformer blocks for First Block Cache"
        block = type(blocks[0])
        if block.__name__ in BLOCK_OUTPUTS and block not in TransformerBlockRegistry._registry:
            hidden, text = BLOCK_OUTPUTS[block.__name__]
            TransformerBlockRegistry.register(block, TransformerBlockMetadata(
                return_hidden_states_index=hidden, return_encoder_hidden_states_index=text))
        try:
            TransformerBlockRegistry.get(block)
        except ValueError:
            return f"diffusers does not know {block.__name__}'s outputs, which First Block Cache needs"
    children = [n for n, _ in model.named_children()]
    if method == "taylorseer" and not ("proj_out" in children and any("block" in n for n in children)):
        # The lite form predicts `proj_out` and skips the children named like `*block*`.
        return f"{name} has no output projection (proj_out) or blocks for TaylorSeer's lite form"
    return None


def _last_blocks(model: Any) -> Any:
    import torch

    for name in _BLOCK_LISTS:
        blocks = getattr(model, name, None)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks):
            return blocks
    return None


def describe(method: str, speed: str) -> dict[str, Any]:
    return {"speed": speed, "method": METHOD_NAMES[method], **SETTINGS[method][speed]}


class _PassCounter:
    """Counts the transformer's calls and the calls in which its last block really ran (a skipped block
    runs none of its children)."""

    def __init__(self, models: list[Any]) -> None:
        self.calls = 0
        self.full = 0
        self.handles = []
        for model in models:
            self.handles.append(model.register_forward_pre_hook(self._call))
            blocks = _last_blocks(model)
            child = next(iter(blocks[-1].children()), None) if blocks is not None else None
            if child is not None:
                self.handles.append(child.register_forward_pre_hook(self._full))

    def _call(self, *_: Any) -> None:
        self.calls += 1

    def _full(self, *_: Any) -> None:
        self.full += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def check_speed(speed: Any) -> str:
    """The job's speed (unset: off), or InvalidInput when it is not one of SPEEDS (the option checks it
    first; this holds for a caller that did not go through it)."""
    speed = speed or "off"
    if speed not in SPEEDS:
        raise InvalidInput(f"speed: must be one of {', '.join(SPEEDS)} (got {speed!r})")
    return speed


def _install(model: Any, method: str, speed: str, name_passes: bool) -> Callable[[], None]:
    """Install the hooks on one model; the call that removes them (and anything installed with them)."""
    if not name_passes:
        model.enable_cache(hook_config(method, speed))
        return model.disable_cache
    from diffusers.hooks import HookRegistry, apply_first_block_cache
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    names: dict[int, str] = {}

    def name_the_pass(module: Any, args: tuple, kwargs: dict) -> None:
        text = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        _set_cache_context(module, CacheContext(names.setdefault(id(text), f"pass {len(names)}")))

    handle = model.register_forward_pre_hook(name_the_pass, with_kwargs=True)
    apply_first_block_cache(model, hook_config(method, speed))

    def remove() -> None:
        handle.remove()
        registry = HookRegistry.check_if_exists_or_initialize(model)
        registry.remove_hook(_FBC_LEADER_BLOCK_HOOK, recurse=True)
        registry.remove_hook(_FBC_BLOCK_HOOK, recurse=True)
        registry.invalidate_child_registries_cache()
        _set_cache_context(model, None)

    return remove


@contextmanager
def step_cache(pipeline: Any, speed: Any, method: str, record: dict[str, Any],
               name_passes: bool = False) -> Iterator[None]:
    """Run the body with `method`'s hooks at `speed` on the pipeline's transformers, then remove them.
    Speed off (or unset) installs nothing. `record` gets the job's `used["step_cache"]` entry.
    `name_passes`: the pipeline does not name its denoiser calls, so they are named here (first_block)."""
    speed = check_speed(speed)
    if speed == "off":
        yield
        return
    models = denoisers(pipeline)
    problems = [why for why in (can_cache(m, method, name_passes) for m in models) if why] or (
        [] if models else ["it has no transformer"])
    if problems:
        raise InvalidInput(f"speed {speed}: {type(pipeline).__name__} cannot cache steps: {problems[0]}; "
                           "use speed off")
    removers: list[Callable[[], None]] = []
    counter = _PassCounter(models)
    try:
        for model in models:
            removers.append(_install(model, method, speed, name_passes))
        yield
        record["step_cache"] = {**describe(method, speed), "transformer_calls": counter.calls,
                                "full_passes": counter.full}
    finally:
        counter.remove()
        for remove in removers:
            remove()
