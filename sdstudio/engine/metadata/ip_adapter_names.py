"""Image prompts (IP-Adapters) under the names of AUTOMATIC1111's ControlNet extension.

The extension, and Forge's built-in copy of it, run an IP-Adapter as a ControlNet unit
whose module is a CLIP vision encoder, and write it as any unit: ``ControlNet 1:
"Module: ip-adapter_clip_h, Model: ip-adapter_sd15 [6a3f4ec5], Weight: 0.6, Resize Mode:
Crop and Resize, Processor Res: 512, Guidance Start: 0.0, Guidance End: 1.0, Pixel
Perfect: False, Control Mode: Balanced"``. sdstudio writes a request's image prompts so,
numbered after its control units, so that both tools read them back.

The module names the encoder: ``ip-adapter_clip_h`` (ViT-H), ``ip-adapter_clip_g``
(ViT-bigG), ``ip-adapter_clip_l`` (ViT-L); the extension's earlier names
(``ip-adapter_clip_sd15``, ``ip-adapter_clip_sdxl``, ``ip-adapter_clip_sdxl_plus_vith``),
its ``ip-adapter-auto`` and Forge's ``CLIP-ViT-H (IPAdapter)`` ... are read too. FaceID,
PuLID and InstantID entries are read only to be named in a note: they need InsightFace's
face embeddings, which sdstudio does not compute.

The text never carries the reference images (nor the encoder's file, nor a mask), so an
image prompt read from it cannot run: each is kept in the extras as written, with a note,
and :func:`read_prompts` gives its settings for reference images chosen again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.control.image_prompts import MAX_IMAGE_PROMPTS, ImagePrompt
from sdstudio.engine.control.units import ControlMode, ControlResize
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import control_names
from sdstudio.engine.metadata.values import as_float
from sdstudio.engine.request import GenerationRequest, Mode

EXTRA_KEY = "ip_adapters"
"""The image record's ``extra`` entry: per image prompt, in order, ``{"name", "hash",
"encoder", "kind"}`` of the IP-Adapter that ran."""
ENCODER_MODULES = {
    "ViT-H": "ip-adapter_clip_h",
    "ViT-bigG": "ip-adapter_clip_g",
    "ViT-L": "ip-adapter_clip_l",
}
"""The extension's module for each CLIP vision encoder."""
_ENCODERS_READ = {module: encoder for encoder, module in ENCODER_MODULES.items()} | {
    "ip-adapter_clip_sd15": "ViT-H",  # the extension's earlier names
    "ip-adapter_clip_sdxl_plus_vith": "ViT-H",
    "ip-adapter_clip_sdxl": "ViT-bigG",
    "ip-adapter-auto": "",  # the encoder the model needs
    "clip-vit-h (ipadapter)": "ViT-H",  # Forge's names
    "clip-vit-bigg (ipadapter)": "ViT-bigG",
    "clip-vit-l (ipadapter)": "ViT-L",
}
_FACE = "it needs InsightFace's face embeddings, which sdstudio does not compute"
_NOT_RUN = {
    "ip-adapter_face_id": f"FaceID: {_FACE}",
    "ip-adapter_face_id_plus": f"FaceID: {_FACE}",
    "insightface+clip-h (ipadapter)": f"FaceID: {_FACE}",
    "ip-adapter_pulid": f"PuLID: {_FACE}",
    "instant_id_face_embedding": f"InstantID: {_FACE}",
    "insightface (instantid)": f"InstantID: {_FACE}",
}
"""Modules of IP-Adapter kinds sdstudio reads but cannot run, and why."""
_MAX_TEXT = 4096


def is_image_prompt(text: str) -> bool:
    """Whether a ``ControlNet N`` entry's text is an IP-Adapter's (its module is an
    encoder for one), not a ControlNet's."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        return False
    module = _module(control_names.entry_items(text))
    return module.startswith("ip-adapter") or module in _ENCODERS_READ or module in _NOT_RUN


def settings_written(
    request: GenerationRequest, extra: Mapping[str, Any] | None = None
) -> list[tuple[str, object]]:
    """The ``ControlNet N`` entries of the request's image prompts, numbered after its
    control units (none for an upscale)."""
    if request.mode is Mode.UPSCALE:
        return []
    recorded = (extra or {}).get(EXTRA_KEY)
    files = recorded if isinstance(recorded, list) else []
    first = len(request.control)
    return [
        (f"ControlNet {first + i}", prompt_text(prompt, files[i] if i < len(files) else None))
        for i, prompt in enumerate(request.ip_adapters)
    ]


def prompt_text(prompt: ImagePrompt, recorded: object = None) -> str:
    """One image prompt as the extension writes an IP-Adapter unit; ``recorded`` is the
    record's ``{"name", "hash", "encoder"}`` of the adapter that ran, else the prompt's
    own model is named and its encoder guessed from the names."""
    items = [
        ("Module", module_for(prompt, recorded)),
        ("Model", control_names.model_title(prompt.model, recorded)),
        ("Weight", repr(float(prompt.weight))),
        ("Resize Mode", control_names.RESIZES[ControlResize.CROP]),
        ("Processor Res", "512"),
        ("Guidance Start", repr(float(prompt.start))),
        ("Guidance End", repr(float(prompt.end))),
        ("Pixel Perfect", "False"),
        ("Control Mode", control_names.MODES[ControlMode.BALANCED]),
    ]
    return ", ".join(f"{key}: {control_names.quoted(value)}" for key, value in items)


def module_for(prompt: ImagePrompt, recorded: object = None) -> str:
    """The extension's module: the recorded encoder's, else one guessed from the encoder
    file's name, else from the model's (SDXL adapters but the ViT-H ones use ViT-bigG)."""
    entry = recorded if isinstance(recorded, dict) else {}
    encoder = entry.get("encoder")
    if isinstance(encoder, str) and encoder in ENCODER_MODULES:
        return ENCODER_MODULES[encoder]
    return ENCODER_MODULES[guess_encoder(prompt.model, prompt.encoder)]


def guess_encoder(model: str, encoder_file: str = "") -> str:
    """``ViT-H``, ``ViT-bigG`` or ``ViT-L`` from the names of an encoder file and an
    IP-Adapter (h94's names say ``vit-G``/``sdxl`` for bigG, ``vit-h`` for ViT-H)."""
    name = encoder_file.casefold().replace("_", "-")
    if "bigg" in name or "clip-g" in name or "vit-g" in name:
        return "ViT-bigG"
    if "vit-l" in name or "clip-l" in name:
        return "ViT-L"
    if "vit-h" in name or "clip-h" in name:
        return "ViT-H"
    stem = model.casefold().replace("_", "-")
    if "vit-g" in stem or ("sdxl" in stem and "vit-h" not in stem):
        return "ViT-bigG"
    return "ViT-H"


def describe(prompt: ImagePrompt) -> str:
    """One line for people: model, how many reference images, weight, start–end, mask."""
    count = len(prompt.images)
    line = (
        f"{control_names.stem(prompt.model)}, {count} image{'s' if count != 1 else ''}, "
        f"weight {prompt.weight:g}, {prompt.start:g}–{prompt.end:g}"
    )
    return line + (", masked" if prompt.mask else "")


@dataclass(frozen=True, slots=True)
class ReadPrompt:
    """An image prompt as a ``ControlNet N`` entry gives it: all but its images."""

    key: str
    """The entry's key as written (``ControlNet 2``)."""
    values: dict[str, Any] = field(default_factory=dict)
    """:class:`ImagePrompt` arguments, all but ``images``; empty when unusable."""
    module: str = ""
    encoder: str = ""
    """``ViT-H``, ``ViT-bigG``, ``ViT-L`` as the module names it; empty: not named."""
    model_hash: str = ""
    problem: str = ""
    """Why the entry cannot be used; empty when it can."""
    unapplied: tuple[str, ...] = ()
    """Settings written that an image prompt does not take (a control mode...)."""

    def prompt(self, images: Sequence[str] | str, mask: str = "") -> ImagePrompt:
        """The image prompt with reference images chosen again; raises
        :class:`InvalidRequest` for an entry that cannot be used."""
        if self.problem:
            raise InvalidRequest(f"{self.key} cannot be used: {self.problem}.")
        chosen = (images,) if isinstance(images, str) else tuple(images)
        return ImagePrompt(images=chosen, mask=mask, **self.values)

    def describe(self) -> str:
        """One line for people (see :func:`describe`, without the image count)."""
        if self.problem:
            return f"unusable: {self.problem}"
        values = self.values
        encoder = f", {self.encoder}" if self.encoder else ""
        return (
            f"{control_names.stem(values['model'])}{encoder}, weight {values['weight']:g}, "
            f"{values['start']:g}–{values['end']:g}"
        )


def read_prompts(settings: Mapping[str, str]) -> list[ReadPrompt]:
    """The IP-Adapter ``ControlNet N`` entries of A1111 settings (keys in any case), in
    order, at most :data:`~sdstudio.engine.control.image_prompts.MAX_IMAGE_PROMPTS`."""
    found = [(key, text) for key, text in control_names.entries(settings) if is_image_prompt(text)]
    return [_read(key, text) for key, text in found[:MAX_IMAGE_PROMPTS]]


def notes(settings: Mapping[str, str]) -> tuple[str, ...]:
    """One note per IP-Adapter entry: what it needs, or why it cannot be used."""
    written: list[str] = []
    found = [key for key, text in control_names.entries(settings) if is_image_prompt(text)]
    for read in read_prompts(settings):
        if read.problem:
            written.append(
                f"{read.key} (an IP-Adapter) is kept as written, not read: {read.problem}."
            )
            continue
        unapplied = f" Its {', '.join(read.unapplied)} would not apply." if read.unapplied else ""
        written.append(
            f"{read.key} (IP-Adapter {control_names.stem(read.values['model'])}) needs its "
            "reference images, which the image does not carry; its settings are kept as "
            f"written, not applied.{unapplied}"
        )
    if len(found) > MAX_IMAGE_PROMPTS:
        more = len(found) - MAX_IMAGE_PROMPTS
        written.append(f"{more} more IP-Adapter entr{'ies' if more > 1 else 'y'} were not read.")
    return tuple(written)


def _module(items: Mapping[str, str]) -> str:
    return (items.get("module") or items.get("preprocessor") or "").strip().casefold()


def _read(key: str, text: str) -> ReadPrompt:
    """One entry's image prompt, or why it cannot be used."""
    items = control_names.entry_items(text)
    module = _module(items)
    title = items.get("model", "").strip()
    if not title or title.casefold() == "none":
        return ReadPrompt(key, module=module, problem="it names no IP-Adapter model")
    if module in _NOT_RUN:
        return ReadPrompt(key, module=module, problem=_NOT_RUN[module])
    titled = control_names.TITLE.fullmatch(title)
    values: dict[str, Any] = {"model": titled["name"] if titled else title}
    for name, item, default in (
        ("weight", "weight", 1.0),
        ("start", "guidance start", 0.0),
        ("end", "guidance end", 1.0),
    ):
        raw = items.get(item)
        number = as_float(raw) if raw is not None else default
        if number is None:
            return ReadPrompt(key, module=module, problem=f"its {name} {raw!r:.40} is unusable")
        values[name] = number
    try:
        ImagePrompt(images=("-",), **values)
    except InvalidRequest as error:
        return ReadPrompt(key, module=module, problem=str(error).rstrip("."))
    return ReadPrompt(
        key,
        values,
        module,
        _ENCODERS_READ.get(module, ""),
        titled["hash"].lower() if titled else "",
        unapplied=_unapplied(items),
    )


def _unapplied(items: Mapping[str, str]) -> tuple[str, ...]:
    """The entry's settings an image prompt does not take, as ``control mode 'X'``: the
    extension's control modes but the balanced one and a resize other than its crop."""
    found: list[str] = []
    mode = items.get("control mode", "").strip()
    if mode and mode.casefold() not in ("balanced", "0", "controlmode.balanced"):
        found.append(f"control mode {mode!r:.40}")
    resize = items.get("resize mode", "").strip()
    if resize and resize.casefold() not in ("crop and resize", "scale to fit (inner fit)"):
        found.append(f"resize mode {resize!r:.40}")
    return tuple(found)
