"""Other tools' sampler, scheduler and model names, mapped onto sdstudio's.

ComfyUI, Fooocus (which runs on ComfyUI's samplers) and InvokeAI name samplers
in snake case (``dpmpp_2m``, ``euler_ancestral``); AUTOMATIC1111 before v1.9
and many tools after it put the schedule into the sampler's name
(``DPM++ 2M Karras``, ``euler_ancestral_karras``). :func:`sampler_and_schedule`
reads all of these spellings, ignoring case, spaces, hyphens and a ``_gpu``
suffix (a sampler that only draws its noise on the GPU).

A sampler name sdstudio has no sampler for is kept as it was written, with
the schedule ``"Automatic"``: generation then reports it as unknown instead of
silently using another sampler. A schedule name sdstudio does not know is kept
as written too, with a note.

sdstudio's ``"Automatic"`` schedule is the model's own timestep spacing.
ComfyUI's ``normal``, ``simple`` and ``ddim_uniform`` (A1111's ``Normal``,
``Simple``, ``DDIM``, ``Uniform``) space timesteps in ways sdstudio does not
offer; ``"Automatic"`` is the closest, and a note says it was used instead.
On flow-matching models (Flux, SD 3.x, ...) ``"Automatic"`` is the Simple
schedule itself, so ``simple`` from a Flux image (Forge writes ``Schedule type:
Simple``) re-runs as it was made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdstudio.engine import samplers

AUTOMATIC = samplers.AUTOMATIC

# Sampler names in snake case (ComfyUI, Fooocus, InvokeAI) and A1111's names
# written the same way (see :func:`_key`).
SAMPLERS: dict[str, str] = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "euler_a": "Euler a",
    "lms": "LMS",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm2": "DPM2",
    "kdpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "dpm_2_a": "DPM2 a",
    "dpm2_a": "DPM2 a",
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

# Schedule names (ComfyUI's scheduler names, A1111's schedule types) that
# sdstudio has under its own name.
SCHEDULERS: dict[str, str] = {
    "automatic": AUTOMATIC,
    "karras": "Karras",
    "exponential": "Exponential",
    "beta": "Beta",
    "sgm_uniform": samplers.SGM_UNIFORM,
}
# Schedules sdstudio has no match for, whose closest is the model's own spacing.
APPROXIMATED = ("normal", "simple", "ddim_uniform", "ddim", "uniform")
# Longest first, so that "sgm_uniform" is found before "uniform".
_SUFFIXES = sorted((*SCHEDULERS, *APPROXIMATED), key=len, reverse=True)

_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")


@dataclass(frozen=True, slots=True)
class SamplerChoice:
    """sdstudio's sampler and schedule for another tool's names, and what was changed."""

    sampler: str
    schedule: str
    notes: tuple[str, ...] = ()

    def put(self, values: dict[str, object]) -> tuple[str, ...]:
        """Set ``values``' sampler and schedule; return the notes."""
        values["sampler"], values["schedule"] = self.sampler, self.schedule
        return self.notes


def sampler_and_schedule(sampler: str, scheduler: str = "") -> SamplerChoice:
    """sdstudio's sampler and schedule for a sampler name and schedule name in any spelling.

    ``("dpmpp_2m", "karras")``, ``("DPM++ 2M Karras", "")`` and
    ``("dpmpp_2m_karras", "")`` all give ``DPM++ 2M`` with ``Karras``. A
    schedule given on its own wins over one in the sampler's name, unless it
    is ``Automatic``. Schedules sdstudio lacks are replaced by the closest with
    a note, or kept as written with a note when there is none.
    """
    written = sampler.strip()
    key = _key(written)
    name, implied = SAMPLERS.get(key.removesuffix("_gpu")), ""
    if name is None:
        for suffix in _SUFFIXES:
            base = key.removesuffix("_" + suffix).removesuffix("_gpu")
            if key.endswith("_" + suffix) and base in SAMPLERS:
                name, implied = SAMPLERS[base], suffix
                break
    if name is None:
        note = f"sdstudio has no sampler {written}; choose a sampler before generating."
        return SamplerChoice(written, AUTOMATIC, (note,))
    wanted = scheduler.strip()
    if not wanted or (_key(wanted) == "automatic" and implied):
        wanted = implied
    if not wanted:
        return SamplerChoice(name, AUTOMATIC)
    schedule, notes = schedule_name(wanted)
    return SamplerChoice(name, schedule, notes)


def schedule_name(written: str) -> tuple[str, tuple[str, ...]]:
    """sdstudio's schedule for another tool's schedule name, and a note when it differs."""
    key = _key(written)
    if key in SCHEDULERS:
        return SCHEDULERS[key], ()
    if key == "simple":
        return AUTOMATIC, (
            f"sdstudio has no {written} schedule for Stable Diffusion models; Automatic is "
            "used, which on flow-matching models (Flux, SD 3.x, ...) is the Simple schedule.",
        )
    if key in APPROXIMATED:
        return AUTOMATIC, (
            f"sdstudio has no {written} schedule; the closest, Automatic "
            "(the model's own timestep spacing), is used.",
        )
    return written, (
        f"sdstudio has no {written} schedule; choose a schedule type before generating.",
    )


def comfyui_sampler(sampler: str, scheduler: str = "") -> tuple[str, str]:
    """sdstudio's sampler and schedule for a ComfyUI or Fooocus ``sampler_name``/``scheduler``.

    ``("dpmpp_2m", "karras")`` gives ``("DPM++ 2M", "Karras")``; see
    :func:`sampler_and_schedule`, which also gives the notes.
    """
    choice = sampler_and_schedule(sampler, scheduler)
    return choice.sampler, choice.schedule


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


def _key(name: str) -> str:
    """A name in snake case: ``"DPM++ 2M SDE Karras"`` gives ``"dpmpp_2m_sde_karras"``."""
    return re.sub(r"[\s\-_]+", "_", name.strip().casefold().replace("++", "pp")).strip("_")
