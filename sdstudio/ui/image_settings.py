"""Which of the settings read from an image file the prompt panel takes.

An image's settings may come from another tool or another person, so the
model and VAE it names are taken only when the app lists them (the catalog of
the model and VAE folders and the Hugging Face cache): a path elsewhere is
replaced by a listed model of the recorded name, or by the model chosen now, and
a model the app does not list is named in a notice (the model chosen now is kept).
A history entry is sdstudio's own and is trusted, as the CLI's ``rerun ID``
is. The source image a record names is never read from its path; the
settings load without it. Nothing here imports Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import ImageSettings
from sdstudio.engine.metadata.values import UNKNOWN_MODEL
from sdstudio.engine.models.part_folders import file_names
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.vae import VAE_SUFFIXES


@dataclass(frozen=True, slots=True)
class PanelChoices:
    """What the prompt panel lists and has chosen now."""

    models: list[tuple[str, str]]
    """(name, path) of each model in the model box."""
    vaes: list[tuple[str, str]]
    """(name, path) of each VAE in the VAE box."""
    model: str
    vae: str


def settings_to_load(
    request: GenerationRequest, model_name: str, choices: PanelChoices, *, trusted: bool
) -> tuple[GenerationRequest, list[str]]:
    """The request to load into the panel, and notices saying what was not taken."""
    notices: list[str] = []
    request = _with_usable_model(request, model_name, choices, trusted, notices)
    if request.vae and not trusted:
        request = _with_usable_vae(request, choices, notices)
    if request.text_encoders and not trusted:
        request = request.replace(text_encoders=file_names(request.text_encoders))
    if request.init_image:
        notices.append(
            "the source image they were made from is not loaded (open or drop it to start from it)"
        )
    try:
        request.check_prompts()
    except InvalidRequest as error:
        notices.append(str(error).rstrip("."))
    return request, notices


def _with_usable_model(
    request: GenerationRequest,
    model_name: str,
    choices: PanelChoices,
    trusted: bool,
    notices: list[str],
) -> GenerationRequest:
    model = request.model
    if any(model == path for _name, path in choices.models if path):
        return request
    current = choices.model.strip()
    if model == UNKNOWN_MODEL and not model_name:  # the image names no model
        return request.replace(model=current) if current else request
    listed = _listed(model, choices) or _listed(model_name, choices)
    is_path = Path(model).is_absolute() and Path(model).exists()
    if trusted and is_path:
        return request
    other = listed or current
    if is_path:
        if other:
            notices.append(
                f"the model {model} is outside the model folders, "
                f"so {_name_of(other, choices)} is chosen instead"
            )
            return request.replace(model=other)
        return request
    if listed:
        return request.replace(model=listed)
    shown = Path(model.replace("\\", "/")).name if _looks_like_path(model) else model
    kept = f"keeping {_name_of(current, choices)}" if current else "choose a model to generate with"
    notices.append(f"the image was made with '{shown}', which is not among your models; {kept}")
    return request.replace(model=current) if current else request


def _listed(name: str, choices: PanelChoices) -> str:
    """The path of the listed model named ``name`` (in any case), or empty."""
    folded = name.strip().casefold()
    for listed, path in choices.models:
        if folded and path and listed.casefold() == folded:
            return path
    return ""


def _name_of(model: str, choices: PanelChoices) -> str:
    """How the model box shows a model (a path's listed name, or its file or folder name)."""
    for name, path in choices.models:
        if path == model:
            return name
    return Path(model).name if _looks_like_path(model) else model


def _looks_like_path(model: str) -> bool:
    return "\\" in model or Path(model).is_absolute() or model.startswith(".")


def _with_usable_vae(
    request: GenerationRequest, choices: PanelChoices, notices: list[str]
) -> GenerationRequest:
    vae = request.vae
    if any(vae == path for _name, path in choices.vaes if path):
        return request
    name = Path(vae.replace("\\", "/")).name
    stem = Path(name).stem if Path(name).suffix.lower() in VAE_SUFFIXES else name
    for listed, path in choices.vaes:
        if path and listed.casefold() == stem.casefold():
            return request.replace(vae=path)
    notices.append(f"the VAE {vae} is not in the VAE folders, so the VAE chosen now is kept")
    return request.replace(vae=choices.vae)


_CORE_FIELDS = (
    ("prompt", "prompt"),
    ("negative_prompt", "negative prompt"),
    ("sampler", "sampler"),
    ("schedule", "schedule type"),
    ("steps", "steps"),
    ("guidance_scale", "CFG scale"),
    ("seed", "seed"),
    ("width", "width"),
    ("height", "height"),
)


def settings_details(settings: ImageSettings) -> str:
    """What the user should know before loading another tool's settings: the core
    settings the image does not hold (sdstudio's defaults fill them), what it holds
    that sdstudio does not apply, and the notes on what was adapted. Empty when
    there is nothing to say (sdstudio's own images)."""
    lines: list[str] = []
    unread = [label for field, label in _CORE_FIELDS if field not in settings.read]
    if unread:
        lines.append(f"Not in the image (sdstudio's defaults are used): {', '.join(unread)}.")
    if settings.extras:
        also = ", ".join(f"{key}: {value}" for key, value in settings.extras.items())
        lines.append(f"Also in the image, not applied: {also}.")
    if settings.model_hash:
        lines.append(f"Model hash: {settings.model_hash}.")
    # The note listing the kept settings says again what the line above shows.
    lines += [f"- {note}" for note in settings.notes if not note.startswith("Also in the image")]
    return "\n".join(lines)
