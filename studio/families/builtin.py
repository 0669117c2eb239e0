"""The families the studio ships. Importing a family's package registers it; adding a family to the
studio is its package plus its name on this line."""

from . import (audioldm2, cogvideox, diffusers, infinity, llama, llamagen, lumina2, lumina_next,  # noqa: F401
               lumina_audio, lumina_t2i, musicgen, stable_audio, t5, upscaler, wan)
