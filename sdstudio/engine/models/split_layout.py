"""Models kept as separate part files, and the parts that complete them.

ComfyUI users keep a flow model's transformer alone in ``models/diffusion_models``
(or ``unet``), its text encoders in ``models/text_encoders`` (or ``clip``) and its
VAE in ``models/vae``; Forge keeps them in ``models/Stable-diffusion``,
``models/text_encoder`` and ``models/VAE``. A transformer file given as the model is
completed here: the parts the request names (paths, or file names in those folders)
are taken, and each part it does not name is the fitting file found in the model's
own tool folders and then in the folders the app knows. The choice is written back
into the request, so every image records the files it was made with.

A file fits a part when its kind fits (a T5 encoder for Flux's second text encoder)
and its width is the one the transformer's config asks for (a Qwen3 4B encoder for
Z-Image, 8B for Flux.2 Klein 9B).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.families import ModelFamily, family
from sdstudio.engine.families.base import TextSlot
from sdstudio.engine.models.part_folders import (
    TEXT_ENCODER_FOLDERS,
    VAE_FOLDERS,
    identify,
    part_files,
    tool_part_folders,
)
from sdstudio.engine.parts import PART_SUFFIXES, Part, Role, part_shapes

log = logging.getLogger(__name__)

VAE_PREFIXES = ("vae.", "first_stage_model.")
Candidate = tuple[Path, Part, str | None]
"""A text encoder file, what it is, and its prefix inside a file holding several."""
"""Where all-in-one checkpoints keep their VAE."""


@dataclass(frozen=True, slots=True)
class SplitModel:
    """A transformer file and the part files that complete it."""

    transformer: Path
    family: ModelFamily
    variant: str
    text_encoders: tuple[Path | None, ...]
    """One per text slot of the family (None: an optional encoder left out)."""
    vae: Path
    text_prefixes: tuple[str | None, ...] = ()
    """For text encoders inside the transformer's own file (an all-in-one checkpoint):
    the prefix of each one's tensor names."""

    def names(self) -> tuple[tuple[str, ...], str]:
        """The text encoders' and the VAE's file names, as a request records them; parts
        inside the model's own file are not named."""
        encoders = tuple(path.name for path in self.separate(self.text_encoders))
        return encoders, "" if self.vae == self.transformer else self.vae.name

    def separate(self, paths: Sequence[Path | None]) -> list[Path]:
        """The files of ``paths`` other than the model's own."""
        return [path for path in paths if path is not None and path != self.transformer]


def transformer_part(path: Path) -> Part | None:
    """The transformer ``path`` holds when it is a transformer file alone, else None."""
    if path.is_dir() or path.suffix.lower() not in PART_SUFFIXES:
        return None
    part = identify(path)  # remembered while the file is unchanged: asked every generation
    return part if part is not None and part.role is Role.TRANSFORMER else None


def complete(
    transformer: Path,
    part: Part,
    text_encoders: Sequence[str],
    vae: str,
    *,
    text_dirs: Iterable[Path] = (),
    vae_dirs: Iterable[Path] = (),
    on_status: Callable[[str], None] | None = None,
) -> SplitModel:
    """The part files that complete ``transformer``: those named, then fitting ones found.

    Names that turn out to be VAE files (Forge records its VAE among the "modules") are
    taken as the VAE when ``vae`` is empty. Raises :class:`ModelError` naming what is
    missing and where it was looked for.
    """
    model_family = family(part.kind)
    layout = model_family.split
    if layout is None:
        raise ModelError(
            f"{transformer.name} is a {model_family.label} transformer, which "
            "sdstudio cannot load from separate files."
        )
    text_folders = [*tool_part_folders(transformer, TEXT_ENCODER_FOLDERS), *text_dirs]
    vae_folders = [*tool_part_folders(transformer, VAE_FOLDERS), *vae_dirs]
    named = [_named_part(name, [*text_folders, *vae_folders]) for name in text_encoders]
    vae_path = _named_part(vae, vae_folders)[0] if vae else None
    encoders = []
    for path, found in named:
        if found.role is Role.VAE and vae_path is None:
            vae_path = path
        elif found.role is Role.TEXT_ENCODER:
            encoders.append((path, found))
        else:
            raise ModelError(f"{path.name} is a {found.label}, not a text encoder.")
    config = _transformer_config(transformer, part.kind)
    inside, vae_inside = embedded_parts(transformer)
    slots, prefixes = _fill_slots(layout.text, encoders, inside, config, text_folders, transformer)
    if vae_path is None:
        vae_path = transformer if vae_inside else None
    if vae_path is None:
        vae_path = _find_vae(layout.vae, vae_folders, transformer, model_family)
    elif vae_path != transformer:
        _check_vae(vae_path, layout.vae, model_family)
    model = SplitModel(transformer, model_family, part.variant, slots, vae_path, prefixes)
    separate = model.separate([*slots, vae_path])
    if on_status and separate and (not text_encoders or not vae):
        names = [path.name if path != transformer else "its own" for path in slots if path]
        vae_name = vae_path.name if vae_path != transformer else "its own"
        on_status(f"{transformer.name}: text encoders {', '.join(names)}; VAE {vae_name}.")
    return model


def embedded_parts(path: Path) -> tuple[list[Candidate], bool]:
    """The text encoders inside a transformer's own file (an all-in-one checkpoint, such
    as SD 3.5's or ComfyUI's Flux.1 fp8), each with its tensor-name prefix, and whether
    the file holds a VAE too."""
    if path.suffix.lower() != ".safetensors":
        return [], False
    from sdstudio.engine.parts.text_encoders import find_text_encoders, read_header
    from sdstudio.engine.parts.vae_files import identify_vae_file

    try:
        _, shapes, dtypes = read_header(path)
    except ModelError:
        return [], False
    found: list[Candidate] = [
        (path, Part(Role.TEXT_ENCODER, info.kind, info.label, width=info.width), prefix)
        for prefix, info in find_text_encoders(shapes, dtypes=dtypes)
    ]
    vae = any(
        identify_vae_file({k[len(p) :]: v for k, v in shapes.items() if k.startswith(p)})
        for p in VAE_PREFIXES
    )
    return found, vae


def assemble(model: SplitModel, *, dtype: Any) -> Any:
    """The family's text-to-image pipeline built from the part files, offline."""
    import diffusers

    from sdstudio.engine.models.loading import configs_root
    from sdstudio.engine.parts.denoisers import load_denoiser
    from sdstudio.engine.parts.text_encoders import load_text_encoder
    from sdstudio.engine.parts.tokenizers import load_tokenizer
    from sdstudio.engine.parts.vae_files import load_vae_file

    layout = model.family.split
    assert layout is not None
    folder = layout.config_folder(model.variant)
    components: dict[str, Any] = {"transformer": load_denoiser(model.transformer, dtype=dtype)}
    for index, (slot, path) in enumerate(zip(layout.text, model.text_encoders, strict=True)):
        if path is None:
            components[slot.component] = components[slot.tokenizer] = None
            continue
        prefix = model.text_prefixes[index] if model.text_prefixes else None
        components[slot.component] = load_text_encoder(
            path, slot.model_class, dtype=dtype, prefix=prefix
        )
        components[slot.tokenizer] = load_tokenizer(slot.kind, second_clip=slot.second_clip)
    components["vae"] = load_vae_file(model.vae, model.family.id, dtype=dtype, config_folder=folder)
    components["scheduler"] = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(
        configs_root() / folder, subfolder="scheduler", local_files_only=True
    )
    components.update(layout.arguments)
    if layout.named_arguments is not None:
        components.update(layout.named_arguments(model.transformer.stem))
    return getattr(diffusers, layout.pipeline)(**components)


def _named_part(name: str, folders: list[Path]) -> tuple[Path, Part]:
    """The file a request names (a path, or a file name or stem in ``folders``) and what
    it is."""
    path = Path(name).expanduser()
    if not path.is_file():
        match = next(
            (
                candidate
                for candidate in part_files(folders)
                if name in (candidate.name, candidate.stem)
            ),
            None,
        )
        if match is None:
            raise ModelError(
                f"The model part '{name}' was not found (looked in {_where(folders)})."
            )
        path = match
    part = identify(path)
    if part is None:
        raise ModelError(f"{path.name} is not a text encoder or VAE sdstudio can use.")
    return path, part


def _transformer_config(transformer: Path, family_id: str) -> dict[str, Any]:
    from sdstudio.engine.parts.denoisers import denoiser_config

    return denoiser_config(part_shapes(transformer), family_id)


def _fill_slots(
    slots: tuple[TextSlot, ...],
    named: list[tuple[Path, Part]],
    inside: list[Candidate],
    config: dict[str, Any],
    folders: list[Path],
    transformer: Path,
) -> tuple[tuple[Path | None, ...], tuple[str | None, ...]]:
    """One text encoder per slot, with its prefix inside the model's file: the named ones
    where they fit, then those inside the model's own file, then ones found in folders."""
    filled: list[Candidate | None] = [None] * len(slots)
    left: list[Candidate] = [(path, part, None) for path, part in named]
    for index, slot in enumerate(slots):
        match = _pick(slot, slots, left, config)
        if match is not None:
            filled[index] = match
            left.remove(match)
    if left:
        names = ", ".join(f"{path.name} ({part.label})" for path, part, _ in left)
        raise ModelError(f"{names} does not fit {transformer.name}: {_wanted(slots, config)}.")
    sources: list[Callable[[], list[Candidate]]] = [
        lambda: inside,
        lambda: _folder_candidates(folders),
    ]
    for source in sources:
        if all(item is not None for item in filled):
            break
        candidates = source()
        used = {(item[0], item[2]) for item in filled if item is not None}
        for index, slot in enumerate(slots):
            if filled[index] is None:
                free = [item for item in candidates if (item[0], item[2]) not in used]
                match = _pick(slot, slots, free, config)
                if match is not None:
                    filled[index] = match
                    used.add((match[0], match[2]))
    for index, slot in enumerate(slots):
        if filled[index] is None and not slot.optional:
            raise ModelError(
                f"{transformer.name} needs a text encoder that was not found: "
                f"{_wanted((slot,), config)} (looked in {_where(folders)}). Put it in one of "
                "those folders or give it with --text-encoder."
            )
    paths = tuple(item[0] if item is not None else None for item in filled)
    prefixes = tuple(item[2] if item is not None else None for item in filled)
    return paths, prefixes


def _folder_candidates(folders: list[Path]) -> list[Candidate]:
    """The text encoder files in ``folders``, full-precision ones first."""
    found: list[Candidate] = [
        (path, part, None)
        for path in part_files(folders)
        if (part := identify(path)) is not None and part.role is Role.TEXT_ENCODER
    ]
    found.sort(key=lambda item: (item[1].quantization != "", item[0].name.lower()))
    return found


def _pick(
    slot: TextSlot,
    slots: tuple[TextSlot, ...],
    candidates: list[Candidate],
    config: dict[str, Any],
) -> Candidate | None:
    """The candidate that fits ``slot``; with two CLIP slots (SD3), the narrower CLIP
    goes first and the wider one second."""
    width = slot.width(config) if slot.width is not None else None
    fitting = [
        item
        for item in candidates
        if item[1].kind == slot.kind and (width is None or item[1].width == width)
    ]
    if not fitting:
        return None
    if sum(s.kind == slot.kind for s in slots) > 1:
        fitting.sort(key=lambda item: item[1].width, reverse=slot.second_clip)
    return fitting[0]


def _wanted(slots: Sequence[TextSlot], config: dict[str, Any]) -> str:
    parts = []
    for slot in slots:
        width = slot.width(config) if slot.width is not None else None
        label = {"clip": "CLIP", "t5": "T5", "qwen3": "Qwen3", "qwen2.5-vl": "Qwen2.5-VL"}.get(
            slot.kind, slot.kind
        )
        parts.append(f"a {label} encoder{f' {width} wide' if width else ''}")
    return "it takes " + " and ".join(parts)


def _find_vae(kind: str, folders: list[Path], transformer: Path, model_family: ModelFamily) -> Path:
    for path in part_files(folders):
        part = identify(path)
        if part is not None and part.role is Role.VAE and part.kind == kind:
            return path
    raise ModelError(
        f"{transformer.name} needs a {model_family.label} VAE, which was not found "
        f"(looked in {_where(folders)}). Put it in one of those folders or give it with --vae."
    )


def _check_vae(path: Path, kind: str, model_family: ModelFamily) -> None:
    part = identify(path)
    if part is None or part.role is not Role.VAE:
        raise ModelError(f"{path.name} is not a VAE sdstudio can use with {model_family.label}.")
    if part.kind != kind:
        raise ModelError(f"{path.name} is a {part.label}; {model_family.label} needs its own VAE.")


def _where(folders: Sequence[Path]) -> str:
    return ", ".join(str(folder) for folder in folders) or "no folders"


def recorded_names(
    model: SplitModel, text_encoders: Sequence[str], vae: str
) -> tuple[tuple[str, ...], str]:
    """The text encoders and VAE a request records for ``model``: each as the request
    named it (a path stays a path), the ones found by their file names."""
    given = [*text_encoders, vae]

    def name(path: Path) -> str:
        for value in given:
            if value and value in (str(path), path.name, path.stem):
                return value
        return path.name

    encoders = tuple(name(path) for path in model.separate(model.text_encoders))
    return encoders, "" if model.vae == model.transformer else name(model.vae)


def module_names(model: SplitModel) -> list[str]:
    """Forge's ``Module 1``, ``Module 2`` ... values: the VAE's, then each text encoder's
    file name without its suffix."""
    return [path.stem for path in model.separate([model.vae, *model.text_encoders])]
