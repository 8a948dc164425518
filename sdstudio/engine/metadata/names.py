"""Other tools' sampler, scheduler and model names, mapped onto sdstudio's.

ComfyUI, Fooocus (which runs on ComfyUI's samplers) and InvokeAI name samplers
in snake case (``dpmpp_2m``, ``euler_ancestral``). A name sdstudio has no
sampler for is kept as it was written, with the schedule ``"Automatic"``:
generation then reports it as unknown instead of silently using another
sampler. A scheduler name sdstudio does not know is kept as written too.

sdstudio's ``"Automatic"`` schedule is the model's own sigma schedule, which
is what ComfyUI's ``normal`` and ``simple`` and InvokeAI's names without
``_k`` use.
"""

from __future__ import annotations

import re

from sdstudio.engine import samplers

AUTOMATIC = samplers.AUTOMATIC

# Snake-case sampler names used by ComfyUI, Fooocus and InvokeAI.
SAMPLERS: dict[str, str] = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "euler_a": "Euler a",
    "lms": "LMS",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "kdpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "dpm_2_a": "DPM2 a",
    "kdpm_2_a": "DPM2 a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "dpmpp_sde": "DPM++ SDE",
    "ddim": "DDIM",
    "plms": "PLMS",
    "pndm": "PLMS",
    "uni_pc": "UniPC",
    # ComfyUI's UniPC with the B(h)=2 variant, which is diffusers' UniPC default.
    "uni_pc_bh2": "UniPC",
    "unipc": "UniPC",
    "deis": "DEIS",
    "lcm": "LCM",
}

# ComfyUI's scheduler names (Fooocus uses the same).
SCHEDULERS: dict[str, str] = {
    "normal": AUTOMATIC,
    "simple": AUTOMATIC,
    # Evenly spaced timesteps: what diffusers' default spacing does.
    "ddim_uniform": AUTOMATIC,
    "karras": "Karras",
    "exponential": "Exponential",
    "beta": "Beta",
    "sgm_uniform": samplers.SGM_UNIFORM,
}

_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")


def comfyui_sampler(sampler: str, scheduler: str = "") -> tuple[str, str]:
    """sdstudio's sampler and schedule for a ComfyUI or Fooocus ``sampler_name``/``scheduler``.

    ``("dpmpp_2m", "karras")`` gives ``("DPM++ 2M", "Karras")``; the ``_gpu``
    variants (``dpmpp_2m_sde_gpu``) only draw their noise on the GPU and map
    like the plain names.
    """
    key = sampler.strip().casefold().removesuffix("_gpu")
    name = SAMPLERS.get(key)
    if name is None:
        return sampler.strip(), AUTOMATIC
    wanted = scheduler.strip()
    if not wanted:
        return name, AUTOMATIC
    return name, SCHEDULERS.get(wanted.casefold(), _canonical_schedule(wanted))


def invokeai_scheduler(scheduler: str) -> tuple[str, str]:
    """sdstudio's sampler and schedule for an InvokeAI scheduler name.

    A ``_k`` suffix (InvokeAI 3+) or ``_karras`` (InvokeAI 2.3) means Karras
    sigmas: ``dpmpp_2m_k`` gives ``("DPM++ 2M", "Karras")``. InvokeAI 2.x
    k-diffusion names with a ``k_`` prefix (``k_euler_a``) are read too;
    ``k_dpmpp_2`` was its DPM++ 2M.
    """
    key = scheduler.strip().casefold()
    schedule = AUTOMATIC
    for suffix in ("_karras", "_k"):
        if key.endswith(suffix) and key.removesuffix(suffix) in SAMPLERS:
            key, schedule = key.removesuffix(suffix), "Karras"
            break
    key = key.removeprefix("k_")
    if key == "dpmpp_2":
        key = "dpmpp_2m"
    name = SAMPLERS.get(key)
    if name is None:
        return scheduler.strip(), AUTOMATIC
    return name, schedule


def model_name(recorded: str) -> str:
    """The name of a model from the file name or path another tool recorded.

    ``"SDXL\\juggernautXL_v8.safetensors"`` gives ``"juggernautXL_v8"``, the
    name AUTOMATIC1111 would write; it is a name, never a path to open.
    """
    name = re.split(r"[\\/]", recorded.strip())[-1]
    for suffix in _MODEL_SUFFIXES:
        if name.casefold().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _canonical_schedule(name: str) -> str:
    try:
        return samplers.get_schedule(name)
    except ValueError:
        return name
