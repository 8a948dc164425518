"""The refiner under AUTOMATIC1111's names, as A1111 and Forge write and read them.

A1111 writes ``Refiner: sd_xl_refiner_1.0 [7440042bbd]``, the checkpoint's
``short_title`` (its file name without extension and the first 10 hex digits of the
file's SHA-256), and ``Refiner switch at: 0.8`` (``sd_samplers_common.apply_refiner``).
A diffusers folder has no file hash: its name is written alone. With a hires fix A1111
runs the refiner in the pass its option "Hires fix: which pass to enable refiner for"
names and writes ``Hires refiner: first pass`` unless that is its default, the second
pass; sdstudio runs it in the first pass and writes so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.values import Parsed, as_float
from sdstudio.engine.models.lookup import display_name
from sdstudio.engine.refine.refiner_settings import DEFAULT_SWITCH_AT, Refiner
from sdstudio.engine.request import GenerationRequest, Mode

REFINER = "refiner"
SWITCH_AT = "refiner switch at"
HIRES_REFINER = "hires refiner"
FIRST_PASS = "first pass"
KEYS = frozenset({REFINER, SWITCH_AT})
"""The keys read (case-folded); ``Hires refiner`` too when it says the first pass."""
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
_TITLE = re.compile(r"(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]")


def settings_written(
    request: GenerationRequest, extra: Mapping[str, Any] | None = None
) -> list[tuple[str, object]]:
    """The ``parameters`` entries of the request's refiner (none without one).

    ``extra`` is the image record's: its ``refiner`` entry gives the name and hash of the
    refiner that ran; without it the request's own value is written by its name.
    """
    refiner = request.refiner
    if refiner is None or request.mode is Mode.UPSCALE:
        return []
    settings: list[tuple[str, object]] = [
        ("Refiner", title(refiner, extra)),
        ("Refiner switch at", f"{refiner.switch_at:g}"),
    ]
    if request.hires is not None and request.mode is Mode.TXT2IMG:
        settings.append(("Hires refiner", FIRST_PASS))
    return settings


def title(refiner: Refiner, extra: Mapping[str, Any] | None = None) -> str:
    """The refiner as A1111 names it, ``sd_xl_refiner_1.0 [7440042bbd]``: from the record's
    ``extra`` (the refiner that ran), else by the request's own value."""
    recorded = (extra or {}).get("refiner")
    recorded = recorded if isinstance(recorded, dict) else {}
    name = str(recorded.get("name") or shown_name(refiner.model))
    short_hash = str(recorded.get("hash") or "")
    return f"{name} [{short_hash}]" if short_hash else name


def shown_name(model: str) -> str:
    """A model as A1111 names a checkpoint: a path by its file name without extension
    (or its folder's name, or ``org/name`` in the Hugging Face cache); a name as it is."""
    path = Path(model).expanduser()
    if not path.is_absolute():
        return model.strip()
    if path.exists():
        return display_name(path)
    return path.stem if path.suffix.lower() in CHECKPOINT_SUFFIXES else path.name


def split_title(written: str) -> tuple[str, str]:
    """``("sd_xl_refiner_1.0", "7440042bbd")`` from A1111's ``sd_xl_refiner_1.0 [7440042bbd]``;
    a name without a hash gives an empty hash."""
    found = _TITLE.fullmatch(written.strip())
    if found is None:
        return written.strip(), ""
    return found["name"].strip(), found["hash"].lower()


@dataclass(frozen=True, slots=True)
class RefinerRead:
    """What a ``parameters`` text says of a refiner."""

    refiner: Refiner | None = None
    used: frozenset[str] = frozenset()
    """Keys (case-folded) read into it; the others stay extras."""
    notes: tuple[str, ...] = ()
    hash: str = ""
    """The refiner's short hash as written."""

    def apply(self, parsed: Parsed) -> Parsed:
        """``parsed`` with the refiner in its request and in its ``read`` fields."""
        if self.refiner is None:
            return dataclasses.replace(parsed, notes=(*parsed.notes, *self.notes))
        return dataclasses.replace(
            parsed,
            request=parsed.request.replace(refiner=self.refiner),
            read=parsed.read | {"refiner"},
            notes=(*parsed.notes, *self.notes),
        )


def read(settings: Mapping[str, str], *, hires: bool = False) -> RefinerRead:
    """Read the refiner from A1111 entries keyed by case-folded name; ``hires`` says
    whether the text's hires fix is read too.

    A refiner named ``None`` is none. A switch that is not a number between 0 and 1 leaves
    the refiner unread (kept as extras, with a note); a missing one is A1111's default.
    """
    written = settings.get(REFINER, "").strip()
    if not written or written.casefold() == "none":
        return RefinerRead()
    name, short_hash = split_title(written)
    switch = DEFAULT_SWITCH_AT
    if SWITCH_AT in settings:
        value = as_float(settings[SWITCH_AT])
        if value is None or not 0 < value < 1:
            note = (
                f"The refiner is kept as written, not applied: its switch "
                f"{settings[SWITCH_AT]!r} is not a number between 0 and 1."
            )
            return RefinerRead(notes=(note,))
        switch = value
    try:
        refiner = Refiner(name, switch)
    except InvalidRequest as error:
        return RefinerRead(notes=(f"The refiner is kept as written, not applied: {error}",))
    used = set(KEYS)
    notes: list[str] = []
    if settings.get(HIRES_REFINER, "").strip().casefold() == FIRST_PASS:
        used.add(HIRES_REFINER)
    elif hires:
        pass_name = settings.get(HIRES_REFINER, "").strip() or "second pass"
        notes.append(
            f"A1111 ran the refiner in the hires fix's {pass_name} (its 'Hires refiner' "
            "setting); sdstudio runs it in the first pass, so the image will differ."
        )
    return RefinerRead(refiner, frozenset(used), tuple(notes), short_hash)
