"""The 1000 ImageNet-1k class names, by class index: what a class-conditional LlamaGen model takes.

The list is torchvision's / Keras' (from pytorch/hub's imagenet_classes.txt). Two names appear twice
in ImageNet itself ("crane", classes 134 and 517; "maillot", 638 and 639): pickers show the index too.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

NULL_CLASS = 1000  # the extra "no class" row a c2i model's label embedding has, for classifier-free guidance


@cache
def class_names() -> tuple[str, ...]:
    lines = (Path(__file__).with_name("imagenet_classes.txt")).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines)
