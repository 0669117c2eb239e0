"""ESRGAN-type upscalers: the native RRDBNet (rrdbnet.py), tiled running (tiles.py), the card section (options.py)."""
