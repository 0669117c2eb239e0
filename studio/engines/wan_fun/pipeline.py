"""The two Wan-Fun pipelines, over diffusers' `WanTransformer3DModel`.

- InP (36 input channels: noise, a 4-channel known-frame mask, the masked video's latents; plus CLIP
  image features) is diffusers' own `WanImageToVideoPipeline`, whose condition layout is VideoX-Fun's
  (`pipeline_wan_fun_inpaint.py`: mask 1 where a frame is known, unknown frames grey, the first frame's
  mask repeated 4x). One change, to its CLIP input: with an end frame diffusers encodes start and end
  and hands the transformer two sets of image tokens (Wan FLF2V's learned positions for 514 tokens,
  which Fun InP lacks); VideoX-Fun gives CLIP the start image alone, whole (`clip_image_features`).
- Control (48 channels: noise, the control video's VAE latents, the start image's latents in the
  first latent frame, zeros after) has no diffusers pipeline: `WanFunControlPipeline` is
  `pipeline_wan_fun_control.py`'s loop (VAE latents by the distribution's mode, normalised by the
  Wan latent mean and std; CLIP features of the reference or start image, zeros without one; CFG on
  the negative prompt; one scheduler step per timestep), with diffusers' prompt and image encoders.
  V1.1 Control's reference image: `ref_conv` turns its latents (zeros without one, as VideoX-Fun) into
  tokens placed before the video's as a latent frame of their own (RoPE frame 0, the video 1..F); the
  transformer is run on one more frame and that frame's patch embedding is replaced by those tokens
  (a forward hook), then its output dropped: the same sequence VideoX-Fun's `full_ref` builds.
- Control-Camera (32 channels: noise, the start image's latents in the first latent frame) is the same
  loop with VideoX-Fun's camera branch: no control latents; the trajectory's Plücker rays, packed 24
  channels per latent frame (`trajectory.py`), go through `control_adapter` once and are added to the
  video's patch embeddings (the same forward hook), as `WanTransformer3DModel.forward` adds `y_camera`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers import DiffusionPipeline, WanImageToVideoPipeline, WanPipeline
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor
from diffusers.video_processor import VideoProcessor
from PIL import Image

# The umT5 prompt length VideoX-Fun pads to (text_len 512 in config/wan2.1/wan_civitai.yaml).
TEXT_LEN = 512


def clip_image_features(pipe: Any, image: Any, device: torch.device | None = None) -> torch.Tensor:
    """CLIP features as VideoX-Fun takes them (videox_fun/models/wan_image_encoder.py): the whole frame
    squeezed to the encoder's square, not diffusers' shortest-side resize and centre crop (which would
    cut the sides off a 832x480 frame); then the processor's normalisation and the penultimate layer."""
    if isinstance(image, (list, tuple)):  # [start, end] when an end frame is given: VideoX-Fun uses the start
        image = image[0]
    crop = pipe.image_processor.crop_size
    squeezed = image.convert("RGB").resize((crop["width"], crop["height"]), Image.BICUBIC)
    return WanImageToVideoPipeline.encode_image(pipe, squeezed, device)


class WanFunInpaintPipeline(WanImageToVideoPipeline):
    """Diffusers' image-to-video pipeline with VideoX-Fun's CLIP input: the start image only, whole."""

    def encode_image(self, image: Any, device: torch.device | None = None) -> torch.Tensor:
        return clip_image_features(self, image, device)


class WanFunControlPipeline(DiffusionPipeline):
    """A Wan-Fun Control checkpoint following a control clip, optionally from a start image."""

    model_cpu_offload_seq = "text_encoder->image_encoder->ref_conv->control_adapter->transformer->vae"
    _optional_components = ["image_encoder", "image_processor", "ref_conv", "control_adapter"]

    # Prompt encoding exactly as diffusers' Wan pipelines do it (umT5, padded with zeros to the length).
    _get_t5_prompt_embeds = WanPipeline._get_t5_prompt_embeds
    encode_prompt = WanPipeline.encode_prompt
    encode_image = clip_image_features

    def __init__(self, tokenizer: Any, text_encoder: Any, vae: Any, scheduler: Any, transformer: Any,
                 image_encoder: Any = None, image_processor: Any = None, ref_conv: Any = None,
                 control_adapter: Any = None) -> None:
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                              transformer=transformer, image_encoder=image_encoder, image_processor=image_processor,
                              ref_conv=ref_conv, control_adapter=control_adapter)
        self.vae_scale_factor_temporal = self.vae.config.scale_factor_temporal
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(like.device, like.dtype)
        return mean, std

    def _encode(self, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Normalised VAE latents of a [-1, 1] clip (B, C, F, H, W): VideoX-Fun's Wan VAE returns the
        mode scaled by (mu - mean) / std, diffusers' returns raw mu, so the scaling is done here."""
        vae_device = get_module_execution_device(self.vae)
        mode = self.vae.encode(pixels.to(vae_device, self.vae.dtype)).latent_dist.mode()
        mode = mode.to(device, torch.float32)
        mean, std = self._latent_stats(mode)
        return (mode - mean) / std

    def _image_tokens(self, image: Image.Image | None, device: torch.device, dtype: torch.dtype) -> Any:
        """CLIP features for the image cross-attention, or None for a checkpoint without one. Without a
        start image VideoX-Fun feeds zeros of the CLIP output's shape (257 tokens for ViT-H/14 at 224)."""
        width = self.transformer.config.image_dim
        if width is None:
            return None
        if image is not None and self.image_encoder is not None:
            return self.encode_image(image, device).to(dtype)
        tokens = 257
        if self.image_encoder is not None:
            vision = self.image_encoder.config
            tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        return torch.zeros(1, tokens, width, device=device, dtype=dtype)

    def _reference_tokens(self, reference: Image.Image | None, latents: torch.Tensor, height: int, width: int,
                          device: torch.device) -> torch.Tensor | None:
        """V1.1's ref_conv tokens as one latent frame (B, dim, 1, h, w), or None for a V1.0 checkpoint."""
        if self.ref_conv is None:
            return None
        if reference is not None:  # resized to the video's size, as VideoX-Fun's get_image_latent does
            pixels = self.video_processor.preprocess(reference, height=height, width=width).unsqueeze(2)
            ref_latents = self._encode(pixels, device)[:, :, 0]
        else:
            ref_latents = torch.zeros_like(latents[:, :, 0])
        return self.ref_conv(ref_latents.to(device)).unsqueeze(2)

    @torch.no_grad()
    def __call__(self, prompt: str, control_video: list[Image.Image] | None = None, negative_prompt: str = "",
                 image: Image.Image | None = None, reference_image: Image.Image | None = None,
                 height: int = 480, width: int = 832, num_frames: int = 49,
                 num_inference_steps: int = 50, guidance_scale: float = 6.0,
                 generator: torch.Generator | None = None, output_type: str = "np",
                 callback_on_step_end: Callable | None = None,
                 control_camera: torch.Tensor | None = None) -> WanPipelineOutput:
        """`control_video` for a Control checkpoint; `control_camera` (1, 24, latent frames, height,
        width: trajectory.camera_latents) for a Control-Camera one."""
        if (control_camera is not None) != (self.control_adapter is not None):
            raise ValueError("a Control-Camera checkpoint takes a camera trajectory (and only it does)")
        if control_camera is None and (control_video is None or len(control_video) != num_frames):
            raise ValueError(f"the control video has {len(control_video or [])} frames; num_frames is {num_frames}")
        device = self._execution_device
        dtype = self.transformer.dtype
        cfg = guidance_scale > 1.0
        prompt_embeds, negative_embeds = self.encode_prompt(prompt, negative_prompt, cfg,
                                                            max_sequence_length=TEXT_LEN, device=device)
        prompt_embeds = prompt_embeds.to(dtype)
        negative_embeds = negative_embeds.to(dtype) if negative_embeds is not None else None
        if reference_image is not None and self.ref_conv is None:
            raise ValueError("this checkpoint has no ref_conv: it takes no reference image")
        # VideoX-Fun's CLIP input: the reference image if there is one, else the start image.
        image_embeds = self._image_tokens(reference_image if reference_image is not None else image, device, dtype)

        shape = (1, self.vae.config.z_dim, (num_frames - 1) // self.vae_scale_factor_temporal + 1,
                 height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        start = torch.zeros_like(latents)
        if image is not None:  # only the first latent frame holds the start image; the rest stay zero
            pixels = self.video_processor.preprocess(image, height=height, width=width).unsqueeze(2)
            start[:, :, :1] = self._encode(pixels, device)
        camera_features = None
        if control_camera is not None:  # VideoX-Fun's camera branch: y is the start image's latents alone
            if tuple(control_camera.shape[2:]) != (shape[2], height, width):
                raise ValueError(f"the camera embedding is {tuple(control_camera.shape)}; this job needs "
                                 f"{shape[2]} latent frames at {height}x{width}")
            condition = start
            camera_features = self.control_adapter(control_camera.to(device))
        else:
            clip = self.video_processor.preprocess_video(control_video, height=height, width=width)
            condition = torch.cat([self._encode(clip, device), start], dim=1)
        ref_tokens = self._reference_tokens(reference_image, latents, height, width, device)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        def velocity(model_input: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            if ref_tokens is not None:  # a leading frame whose patch embedding the hook replaces
                model_input = torch.cat([torch.zeros_like(model_input[:, :, :1]), model_input], dim=2)
            out = self.transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=text,
                                   encoder_hidden_states_image=image_embeds, return_dict=False)[0]
            return out[:, :, 1:] if ref_tokens is not None else out

        hook = None
        if ref_tokens is not None or camera_features is not None:
            def embed(_module: Any, _args: Any, embedded: torch.Tensor) -> torch.Tensor:
                video = embedded[:, :, 1:] if ref_tokens is not None else embedded
                if camera_features is not None:  # y_camera, added before the reference frame is put in
                    video = video + camera_features.to(video)
                return torch.cat([ref_tokens.to(embedded), video], dim=2) if ref_tokens is not None else video
            hook = self.transformer.patch_embedding.register_forward_hook(embed)
        try:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents, condition], dim=1).to(dtype)
                timestep = t.expand(latents.shape[0])
                noise_pred = velocity(model_input, timestep, prompt_embeds)
                if cfg:
                    noise_uncond = velocity(model_input, timestep, negative_embeds)
                    noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond)
                latents = self.scheduler.step(noise_pred.float(), t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    callback_on_step_end(self, i, t, {"latents": latents})
        finally:
            if hook is not None:
                hook.remove()

        vae_device = get_module_execution_device(self.vae)
        latents = latents.to(vae_device, self.vae.dtype)
        mean, std = self._latent_stats(latents)
        video = self.vae.decode(latents * std + mean, return_dict=False)[0]
        video = self.video_processor.postprocess_video(video, output_type=output_type)
        self.maybe_free_model_hooks()
        return WanPipelineOutput(frames=video)
