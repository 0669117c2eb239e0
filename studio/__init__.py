"""Studio: a local generative studio (image, video, audio, music) built on diffusers and transformers."""

__version__ = "0.1.0"
