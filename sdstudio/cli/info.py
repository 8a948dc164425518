"""``info``: the generation settings stored in an image, one a line, with the ones the
image did not hold marked and what sdstudio keeps but does not apply; without an image,
the device generation runs on and the precision ``auto`` picks there, and why."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sdstudio.cli.report import Reporter
from sdstudio.engine.request import Mode

if TYPE_CHECKING:
    from sdstudio.engine.metadata import ImageSettings


def run_info(args: argparse.Namespace, reporter: Reporter) -> int:
    """``info``: the settings stored in an image."""
    from sdstudio.engine.metadata import control_names, ip_adapter_names, read_image_settings

    if args.image is None:
        return _device_info(args, reporter)
    settings = read_image_settings(args.image)
    request = settings.request
    if args.json:
        data: dict[str, Any] = {"source": settings.source, "request": request.to_dict()}
        data["model_name"] = settings.model_name
        data["model_hash"] = settings.model_hash
        data["extras"] = dict(settings.extras)
        data["read"] = sorted(settings.read)
        if settings.record is not None:
            data["created"] = settings.record.created
            data["device"] = settings.record.device
        if settings.parameters:
            data["parameters"] = settings.parameters
        data["notes"] = list(settings.notes)
        reporter.data(data)
        return 0
    source_labels = {
        "sdstudio": "sdstudio",
        "a1111": "AUTOMATIC1111 parameters",
        "comfyui": "ComfyUI",
        "invokeai": "InvokeAI",
        "fooocus": "Fooocus",
        "novelai": "NovelAI",
        "swarmui": "SwarmUI",
        "stabilitymatrix": "Stability Matrix",
        "tensorart": "TensorArt",
        "webdemo": "web demo JSON",
    }
    # Each row with the request fields it shows: a value the image did not hold is marked.
    rows: list[tuple[str, str, tuple[str, ...]]] = [
        ("Source", source_labels.get(settings.source, settings.source), ()),
        ("Prompt", request.prompt, ("prompt",)),
        ("Negative prompt", request.negative_prompt, ("negative_prompt",)),
        ("Mode", request.mode.value, ("mode",)),
        ("Model", request.model, ("model",)),
        ("Model hash", settings.model_hash, ()),
        ("Sampler", request.sampler, ("sampler",)),
        ("Schedule type", request.schedule, ("schedule",)),
        ("Steps", str(request.steps), ("steps",)),
        ("CFG scale", f"{request.guidance_scale:g}", ("guidance_scale",)),
        ("Seed", str(request.seed), ("seed",)),
        ("Size", f"{request.width}x{request.height}", ("width", "height")),
        ("VAE", request.vae, ("vae",)),
        ("Text encoders", ", ".join(request.text_encoders), ("text_encoders",)),
        ("Device", settings.record.device if settings.record is not None else "", ()),
    ]
    rows[2:2] = _resolved_rows(settings)
    if "distilled_guidance" in settings.read:
        rows.append(("Distilled CFG scale", f"{request.distilled_guidance:g}", ()))
    if request.mode is not Mode.TXT2IMG:
        rows += [
            ("Init image", request.init_image or "", ("init_image",)),
            ("Strength", f"{request.strength:g}", ("strength",)),
        ]
    if request.mask:
        rows.append(("Mask", request.mask, ("mask",)))
    if request.hires is not None:
        rows.append(("Hires fix", request.hires.describe(), ("hires",)))
    if request.fast is not None:
        rows.append(("Fast mode", request.fast.describe(), ("fast",)))
    if request.refiner is not None:
        rows.append(("Refiner", request.refiner.describe(), ("refiner",)))
    if request.detailer is not None:
        rows.append(("Detailer", request.detailer.describe(), ("detailer",)))
    if request.upscale is not None:
        upscale = f"{request.upscale.upscaler} x{request.upscale.scale:g}"
        rows.append(("Upscale", upscale, ("upscale",)))
    for i, unit in enumerate(request.control):
        rows.append((f"ControlNet {i}", control_names.describe(unit), ("control",)))
    # Another tool's units, kept as written: its text never carries their control images.
    written = [unit for unit in control_names.read_units(settings.extras) if not unit.problem]
    for unit in written:
        rows.append((unit.key, f"{unit.describe()} (not applied: no control image)", ()))
    rows += _image_prompt_rows(settings)
    prompts = [p for p in ip_adapter_names.read_prompts(settings.extras) if not p.problem]
    for prompt in prompts:
        line = f"IP-Adapter {prompt.describe()} (not applied: no reference images)"
        rows.append((prompt.key, line, ()))
    shown = {u.key for u in written} | {p.key for p in prompts}
    extras = {k: v for k, v in settings.extras.items() if k not in shown}
    for key, value, fields in rows:
        if value:
            unread = not settings.read.issuperset(fields)
            mark = " (not in the image; sdstudio's default)" if unread else ""
            reporter.result(f"{key}: {value}{mark}")
    if extras:
        also = ", ".join(f"{key}: {value}" for key, value in extras.items())
        reporter.result(f"Also in the image (not applied): {also}")
    if settings.notes:
        reporter.result("Notes:")
        for note in settings.notes:
            reporter.result(f"  - {note}")
    return 0


def _resolved_rows(settings: ImageSettings) -> list[tuple[str, str, tuple[str, ...]]]:
    """The prompts an image made from wildcard templates was made with (the request's
    prompts are the templates, which a re-run resolves again)."""
    from sdstudio.engine.prompting.per_image import resolved_of

    resolved = resolved_of(settings.record.extra if settings.record is not None else None)
    if resolved is None:
        return []
    return [("Resolved prompt", resolved[0], ()), ("Resolved negative prompt", resolved[1], ())]


def _image_prompt_rows(settings: ImageSettings) -> list[tuple[str, str, tuple[str, ...]]]:
    """The request's image prompts, each with its images (and the file that ran, from
    sdstudio's record)."""
    from sdstudio.engine.metadata import control_names, ip_adapter_names

    extra = settings.record.extra if settings.record is not None else {}
    recorded = extra.get(ip_adapter_names.EXTRA_KEY)
    files = recorded if isinstance(recorded, list) else []
    rows: list[tuple[str, str, tuple[str, ...]]] = []
    for i, prompt in enumerate(settings.request.ip_adapters):
        line = ip_adapter_names.describe(prompt)
        if i < len(files):
            line += f", file {control_names.model_title(prompt.model, files[i])}"
        rows.append((f"Image prompt {i}", line, ("ip_adapters",)))
        rows.append((f"Image prompt {i} images", ", ".join(prompt.images), ("ip_adapters",)))
        rows.append((f"Image prompt {i} mask", prompt.mask, ("ip_adapters",)))
    return rows


def _device_info(args: argparse.Namespace, reporter: Reporter) -> int:
    """``info`` without an image: the device ``auto`` chooses and the precision it
    runs Stable Diffusion models in there, with the reason (``bfloat16: the CPU has
    AMX``); a re-run uses the precision its image records instead."""
    import sdstudio
    from sdstudio.engine.cuda_path import describe_fast_path
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.precision import auto_precision

    config = choose_device()
    precision = auto_precision(config.device)
    fast_path = describe_fast_path(config)
    if args.json:
        reporter.data(
            {
                "version": sdstudio.__version__,
                "device": config.device,
                "precision": precision,
                "fast_path": fast_path,
            }
        )
        return 0
    reporter.result(f"sdstudio {sdstudio.__version__}")
    reporter.result(f"Device: {config.device}")
    reporter.result(f"Precision (auto): {precision}")
    if fast_path:
        reporter.result(f"Fast path: {fast_path}")
    return 0
