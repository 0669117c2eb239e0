"""Simple scenes drawn from words, and a detector that reads them back.

The built-in mini models are trained on these pictures (tools/train_mini_lumina.py) and judged with the
detector: one shape in one of eight named colours, on a plain background of another, at a place and a
size said in words. A caption says some of it ("a small red circle at the top left on a blue
background", "a yellow star", "a green background"); what it leaves out is drawn at random, so a model
learns what each word pins down and nothing else.

Everything is seeded (a `Scene` per integer), drawn at 4x and box-filtered down so edges are smooth,
and measured with numpy only: no torch, so the detector can read any picture a job wrote.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Eight colours far apart in RGB, so every pixel of a picture is nearest one of them without doubt.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 225, 50),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.11, "medium": 0.17, "large": 0.24}  # the shape's radius as a fraction of the side
# A 3x3 grid: (column, row) of each place, and the words that name it.
PLACES: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}
_CELL_CENTRES = (0.27, 0.5, 0.73)  # of the side, per column or row; a shape's centre jitters around it
_JITTER = 0.03
_SUPERSAMPLE = 4
_STAR_INNER = 0.4  # inner radius of the five-pointed star, of the outer one
# How much of its bounding box each shape fills (the star's: ten triangles of sides 1 and 0.4 in a 1.90 x 1.81 box).
FILL = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5,
        "star": 5 * _STAR_INNER * math.sin(math.pi / 5) / (2 * math.sin(2 * math.pi / 5) * (1 + math.cos(math.pi / 5)))}


@dataclass(frozen=True)
class Scene:
    """What a picture holds. `shape` is None for a plain background; `place` and `size` name a SIZES / PLACES
    key; `said` lists the attributes the caption states (the rest were drawn at random)."""

    background: str
    colour: str | None
    shape: str | None
    size: str | None
    place: str | None
    cx: float = 0.5  # the shape's centre, as fractions of the side
    cy: float = 0.5
    said: tuple[str, ...] = ()

    @property
    def caption(self) -> str:
        return caption(self)


def caption(scene: Scene) -> str:
    """The words for what `scene.said` states, in one fixed order: size, colour, shape, place, background."""
    said = set(scene.said)
    if scene.shape is None:
        return f"{article(scene.background)} {scene.background} background"
    words = []
    if "size" in said and scene.size != "medium":
        words.append(scene.size)
    if "colour" in said:
        words.append(scene.colour)
    words.append(scene.shape if "shape" in said else "shape")
    if "place" in said:
        words.append(place_words(scene.place))
    if "background" in said:
        words.append(f"on {article(scene.background)} {scene.background} background")
    return f"{article(words[0])} {' '.join(words)}"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def place_words(place: str) -> str:
    """"at the top left", "on the left", "in the center" ..."""
    if place == "center":
        return "in the center"
    return f"on the {place}" if place in ("left", "right") else f"at the {place}"


def random_scene(seed: int, *, plain_share: float = 0.05) -> Scene:
    """The scene of `seed`: every attribute drawn, then a random subset of them said (colour and shape most
    often, since those are what people ask for first)."""
    rng = random.Random(seed)
    names = list(COLOURS)
    background = rng.choice(names)
    if rng.random() < plain_share:
        return Scene(background=background, colour=None, shape=None, size=None, place=None, said=("background",))
    colour = rng.choice([c for c in names if c != background])
    shape, size, place = rng.choice(SHAPES), rng.choice(list(SIZES)), rng.choice(list(PLACES))
    col, row = PLACES[place]
    cx = _CELL_CENTRES[col] + rng.uniform(-_JITTER, _JITTER)
    cy = _CELL_CENTRES[row] + rng.uniform(-_JITTER, _JITTER)
    odds = {"colour": 0.9, "shape": 0.9, "background": 0.75, "place": 0.6, "size": 0.5}
    said = tuple(name for name, p in odds.items() if rng.random() < p)
    return Scene(background=background, colour=colour, shape=shape, size=size, place=place, cx=cx, cy=cy, said=said)


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * _STAR_INNER
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    return None


def draw(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as an RGB picture `size` pixels square."""
    big = size * _SUPERSAMPLE
    picture = Image.new("RGB", (big, big), COLOURS[scene.background])
    if scene.shape is not None:
        pen = ImageDraw.Draw(picture)
        fill = COLOURS[scene.colour]
        cx, cy, r = scene.cx * big, scene.cy * big, SIZES[scene.size] * big
        outline = _outline(scene.shape, cx, cy, r)
        if scene.shape == "circle":
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif scene.shape == "square":
            pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            pen.polygon(outline, fill=fill)
    return picture.resize((size, size), Image.Resampling.BOX)


# ---- reading a picture back ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """What the detector sees: the background colour, and the largest patch of another colour (if any)."""

    background: str
    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    place: str | None = None
    fill: float = 0.0  # share of its bounding box the patch covers
    area: float = 0.0  # share of the picture the patch covers


def nearest_colours(pixels: np.ndarray) -> np.ndarray:
    """For an (H, W, 3) uint8 array, the index into COLOURS of each pixel's nearest colour."""
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    distance = ((pixels[..., None, :].astype(np.float32) - palette) ** 2).sum(-1)
    return distance.argmin(-1)


def _largest_patch(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (a flood fill: pictures here are small)."""
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        region, stack = [], [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            region.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def _place_of(cx: float, cy: float) -> str:
    low, high = (_CELL_CENTRES[0] + _CELL_CENTRES[1]) / 2, (_CELL_CENTRES[1] + _CELL_CENTRES[2]) / 2

    def third(v: float) -> int:
        return 0 if v < low else 2 if v > high else 1

    cell = (third(cx), third(cy))
    return next(name for name, where in PLACES.items() if where == cell)


def read(picture: Image.Image, *, min_area: float = 0.01) -> Reading:
    """Read a picture: background = the colour most of the border is nearest; the shape = the largest
    connected patch of another colour, its class from how much of its bounding box it fills, its place
    from its centre and its size from its bounding box. A patch under `min_area` of the picture is noise."""
    pixels = np.asarray(picture.convert("RGB"))
    names = list(COLOURS)
    labels = nearest_colours(pixels)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = int(np.bincount(border, minlength=len(names)).argmax())
    h, w = labels.shape
    counts = np.bincount(labels[labels != background].ravel(), minlength=len(names))
    if counts.sum() < min_area * h * w:
        return Reading(background=names[background])
    colour = int(counts.argmax())
    patch = _largest_patch(labels == colour)
    ys, xs = np.nonzero(patch)
    area = len(ys) / (h * w)
    if area < min_area:
        return Reading(background=names[background])
    bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    fill = len(ys) / float(bw * bh)
    # The nearest fill, on a log scale (a star's 0.35 and a triangle's 0.5 are as far apart as 0.5 and 0.79).
    shape = min(FILL, key=lambda s: abs(math.log(fill / FILL[s])))
    if shape in ("triangle", "star"):
        # Small stars lose their points and fill as much as a triangle; a triangle's widest part is its base
        # (7/16 of it lies in the lowest quarter of its box), a star's base is two thin legs (under a tenth).
        low = (ys >= ys.max() + 1 - bh / 4).mean()
        shape = "triangle" if low > 0.27 else "star"
    extent = max(bw, bh) / max(h, w) / 2  # the radius, as drawn, for circles, squares and triangles
    if shape == "star":
        extent /= math.sin(2 * math.pi / 5)  # a star's box is 1.90 r wide (and 1.81 r high)
    size = min(SIZES, key=lambda s: abs(math.log(extent / SIZES[s])))
    cx, cy = (xs.min() + xs.max() + 1) / 2 / w, (ys.min() + ys.max() + 1) / 2 / h
    return Reading(background=names[background], colour=names[colour], shape=shape, size=size,
                   place=_place_of(cx, cy), fill=fill, area=area)


_RE_WORDS = re.compile(r"[a-z]+")


def parse_caption(text: str) -> dict[str, str]:
    """What a caption in the scenes' words asks for: {attribute: value} for background, colour, shape, size and
    place, each only when the caption says it. Unknown words are ignored."""
    text = " ".join(_RE_WORDS.findall(text.lower()))
    wanted: dict[str, str] = {}
    background = re.search(r"(\w+) background", text)
    if background and background.group(1) in COLOURS:
        wanted["background"] = background.group(1)
        text = text[:background.start()] + text[background.end():]
    for name in sorted(PLACES, key=len, reverse=True):  # "top left" before "top" and "left"
        if re.search(rf"\b(at|in|on) the {name}\b", text):
            wanted["place"] = name
            break
    words = text.split()
    for word in words:
        if word in COLOURS and "colour" not in wanted:
            wanted["colour"] = word
        elif word in SHAPES:
            wanted["shape"] = word
        elif word in SIZES:
            wanted["size"] = word
    return wanted


def agreement(text: str, picture: Image.Image) -> dict[str, bool]:
    """For each attribute the caption asks for, whether the picture shows it (as `read` sees it)."""
    reading = read(picture)
    return {name: getattr(reading, name) == value for name, value in parse_caption(text).items()}


# Every word a caption uses: the mini models' tokenizer makes each one token.
VOCABULARY = tuple(dict.fromkeys(
    ["a", "an", "shape", "background", "at", "on", "in", "the", *COLOURS, *SHAPES, *SIZES,
     *(word for place in PLACES for word in place.split())]))
