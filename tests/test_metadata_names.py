"""Other tools' sampler, scheduler and model names, and fixing out-of-range values."""

from __future__ import annotations

import pytest

from sdstudio.engine.metadata.names import comfyui_sampler, invokeai_scheduler, model_name
from sdstudio.engine.metadata.values import build_request

# --- Names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("dpmpp_2m", "karras"), ("DPM++ 2M", "Karras")),
        (("dpmpp_2m_sde_gpu", "karras"), ("DPM++ 2M SDE", "Karras")),
        (("euler_ancestral", "normal"), ("Euler a", "Automatic")),
        (("euler", "simple"), ("Euler", "Automatic")),
        (("dpmpp_3m_sde", "exponential"), ("DPM++ 3M SDE", "Exponential")),
        (("uni_pc", "sgm_uniform"), ("UniPC", "SGM Uniform")),
        (("lcm", "beta"), ("LCM", "Beta")),
        (("ddim", "ddim_uniform"), ("DDIM", "Automatic")),
        (("dpm_2_ancestral", ""), ("DPM2 a", "Automatic")),
        (("heun", "kl_optimal"), ("Heun", "kl_optimal")),
        (("dpmpp_2s_ancestral", "karras"), ("dpmpp_2s_ancestral", "Automatic")),
    ],
)
def test_comfyui_names(names: tuple[str, str], expected: tuple[str, str]) -> None:
    assert comfyui_sampler(*names) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dpmpp_2m_k", ("DPM++ 2M", "Karras")),
        ("dpmpp_2m", ("DPM++ 2M", "Automatic")),
        ("dpmpp_2m_sde_k", ("DPM++ 2M SDE", "Karras")),
        ("dpmpp_sde", ("DPM++ SDE", "Automatic")),
        ("euler_k", ("Euler", "Karras")),
        ("euler_a", ("Euler a", "Automatic")),
        ("kdpm_2_a_k", ("DPM2 a", "Karras")),
        ("lms_k", ("LMS", "Karras")),
        ("heun", ("Heun", "Automatic")),
        ("pndm", ("PLMS", "Automatic")),
        ("unipc_k", ("UniPC", "Karras")),
        ("deis", ("DEIS", "Automatic")),
        ("lcm", ("LCM", "Automatic")),
        ("ddim", ("DDIM", "Automatic")),
        ("k_lms", ("LMS", "Automatic")),
        ("k_dpmpp_2", ("DPM++ 2M", "Automatic")),
        ("k_dpm_2_a", ("DPM2 a", "Automatic")),
        ("plms", ("PLMS", "Automatic")),
        ("dpmpp_2m_karras", ("DPM++ 2M", "Karras")),
        ("tcd", ("tcd", "Automatic")),
    ],
)
def test_invokeai_names(name: str, expected: tuple[str, str]) -> None:
    assert invokeai_scheduler(name) == expected


def test_model_names() -> None:
    assert model_name("SDXL\\juggernautXL_v9.safetensors") == "juggernautXL_v9"
    assert model_name("/a/b/sd_xl_base_1.0.ckpt") == "sd_xl_base_1.0"
    assert model_name("v1-5-pruned-emaonly") == "v1-5-pruned-emaonly"


def test_build_request_fixes_values() -> None:
    parsed = build_request(
        {"seed": 2**70, "width": 1000, "height": 9000, "steps": 900, "guidance_scale": "nan"},
        model="m",
    )
    request = parsed.request
    assert (request.seed, request.width, request.height) == (-1, 1000, 4096)
    assert (request.steps, request.guidance_scale) == (500, 7.0)
    # seed, height and steps fixed; CFG scale unusable; no prompt and no sampler
    assert len(parsed.notes) == 6
    request = build_request({"seed": 2**32 - 1, "steps": "12.0", "width": True}).request
    assert (request.seed, request.steps, request.width, request.model) == (
        2**32 - 1,
        12,
        512,
        "unknown",
    )


def test_schedule_the_sampler_lacks_falls_back_to_its_default() -> None:
    from sdstudio.engine.metadata.values import build_request

    parsed = build_request({"prompt": "x", "sampler": "Euler a", "schedule": "Karras"})
    assert (parsed.request.sampler, parsed.request.schedule) == ("Euler a", "Automatic")
    assert any("Euler a has no Karras schedule" in note for note in parsed.notes)
