"""Sampling of Lumina-T2Audio / T2Music: the CFM wrapper's ODE, as the reference runs it.

The reference is Alpha-VLLM/Lumina-T2X `lumina_audio/models/diffusion/ddpm_audio.py`, class `CFM`
(`sample`, `sample_cfg`, `Wrapper`, `Wrapper_cfg`; `lumina_music/` has the same class). It is a
conditional flow-matching model with the time running from 0 (noise) to 1 (data):

- Training (`p_losses`) is where sigma_min = 1e-4 enters: x_t = t x1 + (1 - (1 - sigma_min) t) x0
  for data x1 and noise x0, and the target velocity is x1 - (1 - sigma_min) x0 (`flow_point`,
  `flow_target` below). Sampling does not use it: it integrates the model's velocity as is.
- The model is called with integer timesteps: `Wrapper`'s `torch.tensor([t * 1000] * B).long()`,
  float32 t times 1000, truncated toward zero (`model_timesteps`).
- The solver is torchdyn's `NeuralODE(solver="euler")` over `torch.linspace(0, 1, steps)`:
  steps - 1 Euler steps, x += dt * v. torchdyn's fixed-step loop (`_fixed_odeint`) does not read
  the grid's times back: it accumulates t = t + dt and forms the next dt = t_span[i + 1] - t, all
  0-dim float32 tensors. `euler_grid` does the same. On this grid it is the grid itself, bit for
  bit (checked for 2..1000 points: consecutive points are within a factor 2, so each difference and
  sum is exact), and the timesteps are trunc(float32(t_i) * 1000): 0, 41, 83, 125, ... for 25 points
  (rounding instead would give 42 for the second).
- Classifier-free guidance (`Wrapper_cfg`) runs one batch [uncond; cond], every channel guided:
  v = v_u + s (v_c - v_u). The demos take the unguided `sample` when the scale is exactly 1.
- The latent is the VAE's times `scale_factor` (a buffer in the checkpoint, `scale_by_std`):
  `decode_first_stage` multiplies by 1.0 / scale_factor before the VAE decodes (`unscale`).

The reference's demo draws its noise as randn(1, 20, 312) (312 latent frames, ~10 s of 16 kHz audio)
without applying the requested seed; seeding is the caller's business here.
"""

from __future__ import annotations

from typing import Callable

import torch

SIGMA_MIN = 1e-4
NUM_TIMESTEPS = 1000  # the wrapper's timestep scale
DEFAULT_STEPS = 25  # sample()/sample_cfg()'s default number of time points

# (x, integer timesteps (B,), context) -> velocity; FlagDiTv2.forward has this signature.
Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepHook = Callable[[int, int, torch.Tensor], None]  # (steps done, total steps, x)


def flow_point(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """The training path's point at time t between noise x0 and data x1 (p_losses' x_noisy)."""
    return t * x1 + (1.0 - (1 - SIGMA_MIN) * t) * x0


def flow_target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The training path's velocity (p_losses' ut)."""
    return x1 - (1 - SIGMA_MIN) * x0


def model_timesteps(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Wrapper's `torch.tensor([t * 1000] * batch).long()`: float32 t * 1000, truncated, per row."""
    return (t * NUM_TIMESTEPS).long().reshape(1).repeat(batch)


def euler_grid(steps: int, start: int = 0, device: torch.device | str | None = None) -> list[tuple[torch.Tensor,
                                                                                                    torch.Tensor]]:
    """(t, dt) of each Euler step, as torchdyn's `_fixed_odeint` forms them over linspace(0, 1, steps)
    (`t_start` of the reference drops the first `start` points): t accumulates as t + dt, each dt is
    the next grid point minus the accumulated t, 0-dim float32 tensors on `device`."""
    if steps < 2:
        raise ValueError(f"the Euler grid needs at least 2 time points, not {steps}")
    t_span = torch.linspace(0, 1, steps)[start:].to(device)
    if len(t_span) < 2:
        raise ValueError(f"starting at point {start} of {steps} leaves no step")
    grid = []
    t, dt = t_span[0], t_span[1] - t_span[0]
    for i in range(1, len(t_span)):
        grid.append((t, dt))
        t = t + dt
        if i < len(t_span) - 1:
            dt = t_span[i + 1] - t
    return grid


def velocity(model: Model, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
             uncond: torch.Tensor | None = None, cfg_scale: float = 1.0) -> torch.Tensor:
    """The model's velocity at x and float time t; guided (one [uncond; cond] batch) when `uncond`
    is given, as Wrapper_cfg, or the plain conditional one, as Wrapper."""
    steps = model_timesteps(t, x.shape[0])
    if uncond is None:
        return model(x, steps, cond)
    v_uncond, v_cond = model(torch.cat([x, x]), torch.cat([steps, steps]), torch.cat([uncond, cond])).chunk(2)
    return v_uncond + cfg_scale * (v_cond - v_uncond)


def sample(model: Model, noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None = None,
           cfg_scale: float = 1.0, steps: int = DEFAULT_STEPS, start: int = 0,
           on_step: StepHook | None = None) -> torch.Tensor:
    """The latent that CFM.sample_cfg (or CFM.sample, with no `uncond` or a scale of 1, as the demos
    choose) integrates from `noise`: steps - 1 Euler steps over linspace(0, 1, steps).

    `cond` and `uncond` are context features (B, N, context_dim) for the B rows of `noise`."""
    if uncond is not None and cfg_scale == 1.0:
        uncond = None  # demo_audio.py / demo_music.py: `if cfg_scale == 1: model.sample(...)`
    grid = euler_grid(steps, start, noise.device)
    x = noise
    for i, (t, dt) in enumerate(grid):
        x = x + dt * velocity(model, x, t, cond, uncond, cfg_scale)
        if on_step is not None:
            on_step(i + 1, len(grid), x)
    return x


def unscale(latent: torch.Tensor, scale_factor: torch.Tensor | float) -> torch.Tensor:
    """decode_first_stage's `1.0 / self.scale_factor * z`: the VAE's latent from the sampled one."""
    factor = torch.as_tensor(scale_factor, dtype=torch.float32, device=latent.device)
    return (1.0 / factor) * latent
