"""Infinity's scale schedules: which token grids it predicts, one after another, for each pixel
budget and aspect ratio (infinity/utils/dynamic_resolution.py, copied as data).

A schedule is a list of (h, w) token grids, coarse to fine; the image is 16 x the last grid. Every
budget's schedule is the first 7, 10, 12 or 13 grids of its aspect ratio's list, so the smaller
budgets are prefixes of the 1M one (the 2D RoPE relies on that). Torch-free: cards are checked
with it at read time.
"""

from __future__ import annotations

VAE_STRIDE = 16  # pixels per token side
BUDGETS = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}  # schedule lengths

# h/w ratio -> (h, w) grids, as dynamic_resolution.ratio2hws; the w/h > 1 ratios are the transposes.
_RATIO_HWS: dict[float, list[tuple[int, int]]] = {
    1.000: [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40),
            (48, 48), (64, 64)],
    1.250: [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36),
            (55, 44), (70, 56)],
    1.333: [(1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36),
            (60, 45), (72, 54)],
    1.500: [(1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32),
            (63, 42), (78, 52)],
    1.750: [(1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32),
            (70, 40), (84, 48)],
    2.000: [(1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30),
            (74, 37), (90, 45)],
    2.500: [(1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26),
            (80, 32), (100, 40)],
    3.000: [(1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24),
            (90, 30), (111, 37)],
}


def _all_ratios() -> dict[float, list[tuple[int, int]]]:
    table = {}
    for ratio, hws in _RATIO_HWS.items():
        table[ratio] = hws
        if ratio != 1.0:  # the reference's key for the inverse: int(1/ratio*1000)/1000 (0.8, 0.75, 0.666…)
            table[int(1 / ratio * 1000) / 1000] = [(w, h) for h, w in hws]
    return dict(sorted(table.items()))


RATIOS = _all_ratios()  # h/w template -> the full 13-grid list


def schedule(ratio: float, budget: str) -> list[tuple[int, int]]:
    """The (h, w) token grids of one aspect-ratio template at one pixel budget."""
    return RATIOS[ratio][:BUDGETS[budget]]


def size_of(ratio: float, budget: str) -> tuple[int, int]:
    """(width, height) in pixels of a template at a budget."""
    h, w = schedule(ratio, budget)[-1]
    return w * VAE_STRIDE, h * VAE_STRIDE


def sizes(budget: str) -> dict[tuple[int, int], float]:
    """(width, height) -> its h/w template, for every aspect ratio at a budget."""
    return {size_of(ratio, budget): ratio for ratio in RATIOS}


def size_names(budget: str) -> list[str]:
    """'WxH' for every size of a budget, as a card's `resolutions` lists them (square first)."""
    ordered = sorted(sizes(budget).items(), key=lambda item: (item[1] != 1.0, item[1]))
    return [f"{w}x{h}" for (w, h), _ in ordered]


def ratio_for(width: int, height: int, budget: str) -> float | None:
    """The template that makes exactly width x height at this budget, or None."""
    return sizes(budget).get((width, height))
