"""Loading an upscaler card (spandrel when it imports, else the native RRDBNet) and running one job:
the source image decoded within its limits, upscaled tile by tile (one step per tile), then resized
with Lanczos when the job asks for a scale other than the model's own."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch

from ...engines.bundle import ModuleBundle
from ...engines.esrgan.options import engine_options
from ...engines.esrgan.rrdbnet import load_rrdbnet, read_state
from ...engines.esrgan.tiles import resize_to, tile_count, upscale
from ...errors import ModelNotAvailable
from ...tasks.base import StepCallback, TaskOutput

log = logging.getLogger(__name__)


class UpscalerPipeline(ModuleBundle):
    """The network as the scheduler places it, with what running it needs to know."""

    def __init__(self, net: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], scale: int,
                 fold: int, loader: str) -> None:
        super().__init__(net=net)
        self.forward, self.scale, self.fold, self.loader = forward, scale, fold, loader

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype


def spandrel_module() -> Any:
    """spandrel, or None where it is not installed or cannot import (it needs a torchvision that fits torch)."""
    try:
        import spandrel
    except Exception as err:  # ImportError, or torchvision's "operator torchvision::nms does not exist"
        log.debug("spandrel unavailable (%s): using the native RRDBNet", err)
        return None
    return spandrel


def _with_spandrel(spandrel: Any, path: Path, dtype: torch.dtype) -> UpscalerPipeline:
    state = read_state(path)  # read here, weights only: spandrel is given tensors, never a file to unpickle
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except Exception as err:  # spandrel's UnsupportedModelError and kin
        raise ModelNotAvailable(f"{path.name} is not an upscaler spandrel knows: {err}") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.input_channels != 3:
        raise ModelNotAvailable(f"{path.name} is a {descriptor.architecture.name} model, not an RGB image upscaler")
    descriptor.to(dtype).eval()
    return UpscalerPipeline(descriptor.model, descriptor, int(descriptor.scale), 1,
                            f"spandrel {descriptor.architecture.name}")


def load(card: Any, folder: Path, required: dict[str, Path], dtype: torch.dtype) -> UpscalerPipeline:
    files = engine_options(card)
    path = Path(folder) / files.weights
    spandrel = spandrel_module()
    if spandrel is not None:
        pipeline = _with_spandrel(spandrel, path, dtype)
    else:
        net = load_rrdbnet(path, dtype)
        pipeline = UpscalerPipeline(net, net, net.scale, net.config.unshuffle, "native RRDBNet")
    if pipeline.scale != files.scale:
        raise ModelNotAvailable(f"{path.name} is an x{pipeline.scale} upscaler, but the card {card.id} says "
                                f"x{files.scale}: fix the card's engine: scale")
    return pipeline


def run(task: str, pipeline: UpscalerPipeline, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    from ...tasks.upscale import load_source, output_size

    image = load_source(spec.image, card, spec.scale)
    out = upscale(pipeline.forward, image, pipeline.scale, tile=spec.tile, overlap=spec.tile_overlap,
                  fold=pipeline.fold, device=pipeline.device, dtype=pipeline.dtype, on_tile=on_step)
    out = resize_to(out, *output_size(*image.size, spec.scale))
    return TaskOutput(items=[out], used={
        "upscaler": pipeline.loader, "native_scale": pipeline.scale, "source_size": list(image.size),
        "tiles": tile_count(*image.size, spec.tile), "resize": "lanczos" if spec.scale != pipeline.scale else None})
