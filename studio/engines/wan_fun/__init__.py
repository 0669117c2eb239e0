"""VideoX-Fun's own Wan 2.1 Fun checkpoints (alibaba-pai/Wan2.1-Fun-*) in their original layout.

A Fun repo holds VideoX-Fun's `config.json` and `diffusion_pytorch_model.safetensors` in the original
Wan key names, beside pickled `.pth` copies of the VAE, umT5 and CLIP that are never fetched: those
come in diffusers format from the official Wan-AI repos, as component cards (`options.py`).
`convert.py` turns the checkpoint into diffusers' `WanTransformer3DModel`; `pipeline.py` runs InP on
diffusers' own image-to-video pipeline and Control (and V1.1 Control-Camera, whose `control_adapter` is
loaded beside the transformer) on a native loop (VideoX-Fun's `pipeline_wan_fun_control.py`);
`trajectory.py` reads a camera trajectory file into Plücker rays; `load.py` puts a card's folders together.
"""
