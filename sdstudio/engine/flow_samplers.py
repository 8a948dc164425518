"""The schedulers behind the flow-matching samplers (SD 3.x, Flux.1, Flux.2, Z-Image,
Qwen-Image).

The flow pipelines drive their scheduler the same way: ``set_timesteps`` with the
sigmas (Flux, Flux.2, Z-Image and Qwen-Image pass ``linspace(1, 1/steps, steps)``,
SD 3 passes none) and ``mu``, the shift for the image size when the model shifts
dynamically; then ``set_begin_index``, ``scale_noise`` for img2img and inpainting,
and ``step``. diffusers' flow-matching Euler and LCM schedulers take all of that;
its Heun, DPM-Solver and UniPC schedulers take only part of it (no custom sigmas,
no ``mu``, no ``scale_noise``).

So every scheduler here uses one sigma schedule, the one the flow-matching Euler
scheduler makes from the model's own config: the linear sigmas (ComfyUI's
"simple", also when the pipeline passes none), shifted by the model's fixed or
dynamic shift, stretched to its terminal sigma, and respaced as Karras,
exponential or beta sigmas when one of those flags is set. Heun, DPM++ 2M and
UniPC then solve on those sigmas; Euler and LCM are diffusers' own. LCM draws
fresh noise at every step and the pipelines do not hand their generator to
``step``, so it draws from its own generator, seeded with the image's seed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_flow_match_heun_discrete import (
    FlowMatchHeunDiscreteScheduler,
)
from diffusers.schedulers.scheduling_flow_match_lcm import FlowMatchLCMScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler

SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
# The model's settings that make its sigma schedule; the pipelines read some of them
# from the scheduler's config to work out mu, so every scheduler here carries them.
SHIFT_KEYS = (
    "num_train_timesteps",
    "shift",
    "use_dynamic_shifting",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "time_shift_type",
    "shift_terminal",
)
# Multistep solvers take log(1 - sigma): the first sigma stays just below 1.
_FIRST_SIGMA = 1.0 - 1e-6


def linear_sigmas(steps: int) -> np.ndarray:
    """ComfyUI's simple schedule before the shift: ``steps`` sigmas from 1 down to 1/steps."""
    return np.linspace(1.0, 1.0 / steps, steps)


class _LinearByDefault:
    """Linear sigmas when the pipeline passes neither sigmas nor timesteps."""

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Any = None,
        mu: float | None = None,
        timesteps: Any = None,
    ) -> None:
        """Set the schedule for a run: the pipeline's sigmas, or linear ones."""
        if sigmas is None and timesteps is None and num_inference_steps:
            sigmas = linear_sigmas(num_inference_steps)
        super().set_timesteps(  # type: ignore[misc]
            num_inference_steps, device, sigmas=sigmas, mu=mu, timesteps=timesteps
        )


class FlowEulerScheduler(_LinearByDefault, FlowMatchEulerDiscreteScheduler):  # type: ignore[misc]
    """diffusers' flow-matching Euler, on linear sigmas also when the pipeline passes none."""

    def stretch_shift_to_terminal(self, t: Any) -> Any:
        """Stretch the sigmas to the model's terminal sigma; one sigma stays as it is."""
        return t if len(t) < 2 else super().stretch_shift_to_terminal(t)


def flow_schedule(
    config: Mapping[str, Any],
    num_inference_steps: int | None = None,
    device: Any = None,
    sigmas: Any = None,
    mu: float | None = None,
    timesteps: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sigmas (ending in 0) and timesteps that the flow-matching Euler scheduler
    makes from ``config`` for a pipeline's ``set_timesteps`` arguments.

    Raises ``ValueError`` as that scheduler does (no ``mu`` for a model that
    shifts dynamically, sigmas of the wrong length).
    """
    settings = {
        key: config[key] for key in (*SHIFT_KEYS, *SIGMA_FLAGS) if config.get(key) is not None
    }
    euler = FlowEulerScheduler(**settings)
    euler.set_timesteps(
        num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps
    )
    return euler.sigmas.to("cpu"), euler.timesteps


class FlowLCMScheduler(_LinearByDefault, FlowMatchLCMScheduler):  # type: ignore[misc]
    """diffusers' flow-matching LCM, on linear sigmas by default, with seeded noise.

    The noise comes from a CPU generator seeded with the config's ``noise_seed``
    at each ``set_timesteps``, so a run repeats exactly on any device.
    """

    _noise: torch.Generator | None = None

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Any = None,
        mu: float | None = None,
        timesteps: Any = None,
    ) -> None:
        """Set the schedule for a run and restart the noise from the seed."""
        super().set_timesteps(
            num_inference_steps, device, sigmas=sigmas, mu=mu, timesteps=timesteps
        )
        seed = self.config.get("noise_seed")
        self._noise = None if seed is None else torch.Generator("cpu").manual_seed(int(seed))

    def stretch_shift_to_terminal(self, t: Any) -> Any:
        """Stretch the sigmas to the model's terminal sigma; one sigma stays as it is."""
        return t if len(t) < 2 else super().stretch_shift_to_terminal(t)

    def step(
        self,
        model_output: Any,
        timestep: Any,
        sample: Any,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> Any:
        """One LCM step; noise from ``generator`` if given, else from the seeded one."""
        chosen = generator if generator is not None else self._noise
        return super().step(
            model_output, timestep, sample, generator=chosen, return_dict=return_dict
        )


class FlowHeunScheduler(FlowMatchHeunDiscreteScheduler):
    """diffusers' flow-matching Heun on the shared flow schedule (it takes sigmas and mu)."""

    scale_noise = FlowMatchEulerDiscreteScheduler.scale_noise

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Any = None,
        mu: float | None = None,
        timesteps: Any = None,
    ) -> None:
        """Set the schedule for a run: each sigma after the first is visited twice."""
        flow_sigmas, flow_timesteps = flow_schedule(
            self.config, num_inference_steps, device, sigmas, mu, timesteps
        )
        super().set_timesteps(len(flow_timesteps), device)
        self.timesteps = torch.cat(  # type: ignore[assignment]
            [flow_timesteps[:1], flow_timesteps[1:].repeat_interleave(2)]
        )
        inner = flow_sigmas[1:-1].repeat_interleave(2)
        self.sigmas = torch.cat([flow_sigmas[:1], inner, flow_sigmas[-1:]])


class _OnFlowSigmas:
    """A multistep solver run on the shared flow schedule: it takes the flow-matching
    ``set_timesteps`` arguments and noises images as the flow Euler scheduler does."""

    config: Any
    sigmas: Any
    timesteps: Any
    scale_noise = FlowMatchEulerDiscreteScheduler.scale_noise

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Any = None,
        mu: float | None = None,
        timesteps: Any = None,
    ) -> None:
        """Set the schedule for a run from the pipeline's sigmas and mu."""
        flow_sigmas, flow_timesteps = flow_schedule(
            self.config, num_inference_steps, device, sigmas, mu, timesteps
        )
        self._prepare_solver(len(flow_timesteps), device, mu)
        self.sigmas, self.timesteps = _below_one(flow_sigmas), flow_timesteps

    def _prepare_solver(self, steps: int, device: Any, mu: float | None) -> None:
        raise NotImplementedError


class FlowDPMSolverMultistepScheduler(_OnFlowSigmas, DPMSolverMultistepScheduler):  # type: ignore[misc]
    """diffusers' DPM-Solver(++) with flow prediction, on the shared flow schedule."""

    def _prepare_solver(self, steps: int, device: Any, mu: float | None) -> None:
        DPMSolverMultistepScheduler.set_timesteps(self, num_inference_steps=steps, device=device)


class FlowUniPCMultistepScheduler(_OnFlowSigmas, UniPCMultistepScheduler):  # type: ignore[misc]
    """diffusers' UniPC with flow prediction, on the shared flow schedule."""

    def _prepare_solver(self, steps: int, device: Any, mu: float | None) -> None:
        UniPCMultistepScheduler.set_timesteps(self, steps, device, mu=mu)

    def stretch_shift_to_terminal(self, t: Any) -> Any:
        """Stretch the sigmas to the model's terminal sigma; one sigma stays as it is."""
        return t if len(t) < 2 else super().stretch_shift_to_terminal(t)


def _below_one(sigmas: torch.Tensor) -> torch.Tensor:
    return sigmas.clamp(max=_FIRST_SIGMA)


FLOW_SCHEDULERS: dict[str, Any] = {
    cls.__name__: cls
    for cls in (
        FlowEulerScheduler,
        FlowHeunScheduler,
        FlowDPMSolverMultistepScheduler,
        FlowUniPCMultistepScheduler,
        FlowLCMScheduler,
    )
}


def build_flow_scheduler(
    class_name: str,
    base_config: Mapping[str, Any],
    *,
    sigma_flag: str | None = None,
    options: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> Any:
    """Build one of :data:`FLOW_SCHEDULERS` from a flow model's scheduler config.

    The model's shift settings are kept, ``sigma_flag`` (one of
    :data:`SIGMA_FLAGS`, or ``None`` for the linear sigmas) picks the spacing,
    ``options`` are the sampler's own settings and ``seed`` seeds the noise of
    a sampler that draws its own.
    """
    cls = FLOW_SCHEDULERS[class_name]
    accepted = set(inspect.signature(cls.__init__).parameters)
    shift = base_config.get("shift", base_config.get("flow_shift", 1.0))
    wanted: dict[str, Any] = dict(base_config)
    wanted.update({flag: flag == sigma_flag for flag in SIGMA_FLAGS})
    wanted.update(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)
    wanted.update(options or {})
    scheduler = cls.from_config({key: value for key, value in wanted.items() if key in accepted})
    carried = {key: base_config[key] for key in SHIFT_KEYS if key in base_config}
    carried.update({flag: wanted[flag] for flag in SIGMA_FLAGS}, shift=shift)
    if seed is not None:
        carried["noise_seed"] = seed
    scheduler.register_to_config(
        **{key: value for key, value in carried.items() if key not in accepted}
    )
    return scheduler
