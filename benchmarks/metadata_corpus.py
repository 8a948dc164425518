"""How well sdstudio reads the settings in images made by popular tools.

    python benchmarks/metadata_corpus.py            # the table
    python benchmarks/metadata_corpus.py --json     # the table, then one JSON line
    python benchmarks/metadata_corpus.py --tool ComfyUI --tool NovelAI

A corpus of images is written by code to a temporary folder (see
``tests/metadata_samples_corpus.py``: each image holds what its tool writes,
with the values a reader should find), ``read_image_settings`` reads each
one, and a row per tool counts:

- ``imgs``: images; ``recog``: read with the right source;
- per core field (prompt, negative, seed, steps, CFG, sampler, schedule,
  size, model): ``right/held``, over the images that hold the field;
- ``hash`` and ``extras``: the model hash and the settings beyond the core
  ones (hires, LoRA hashes...), where the format holds them; ``—`` when
  ``ImageSettings`` has no ``model_hash`` or ``extras`` to read them into;
- ``invented``: fields returned with a value the image did not hold: a field
  the image lacks given a value, or a default (prompt ``""``, 512×512, 20
  steps...) returned instead of the image's value, unless the reader says
  it did not read that field (``ImageSettings.read``);
- ``overall``: right fields over held fields, hash and extras included.

The figures describe the readers; nothing here is a pass mark.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from metadata_samples_corpus import Sample, corpus  # noqa: E402

from sdstudio.engine.errors import SdStudioError  # noqa: E402
from sdstudio.engine.metadata import ImageSettings, read_image_settings  # noqa: E402
from sdstudio.engine.request import RANDOM_SEED, GenerationRequest  # noqa: E402

CORE = ("prompt", "negative", "seed", "steps", "cfg", "sampler", "schedule", "size", "model")
_REQUEST_FIELDS = {
    "prompt": ("prompt",),
    "negative": ("negative_prompt",),
    "seed": ("seed",),
    "steps": ("steps",),
    "cfg": ("guidance_scale",),
    "sampler": ("sampler",),
    "schedule": ("schedule",),
    "size": ("width", "height"),
    "model": ("model",),
}
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".gguf", ".sft")
_MISSING = object()


@dataclass
class Row:
    """The counts for one tool."""

    tool: str
    images: int = 0
    recognised: int = 0
    right: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    invented: int = 0
    misses: list[str] = field(default_factory=list)
    """Per image: why it was not read, or which fields came back wrong."""

    def add(self, name: str, held: bool, right: bool) -> None:
        """Count one field of one image."""
        if held:
            self.held[name] = self.held.get(name, 0) + 1
            self.right[name] = self.right.get(name, 0) + int(right)

    def overall(self) -> float:
        """Right fields over held fields, in percent."""
        held = sum(self.held.values())
        return 100.0 * sum(self.right.values()) / held if held else 0.0


def _model_key(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    for suffix in _MODEL_SUFFIXES:
        if base.casefold().endswith(suffix):
            base = base[: -len(suffix)]
    return base.casefold()


def _hash_key(value: object) -> str:
    return str(value).strip().casefold().removeprefix("0x")


def _same_hash(found: object, expected: str) -> bool:
    found_key, expected_key = _hash_key(found), _hash_key(expected)
    shorter = min(len(found_key), len(expected_key))
    return shorter >= 8 and found_key[:shorter] == expected_key[:shorter]


def _value(settings: ImageSettings, name: str) -> object:
    request = settings.request
    if name == "prompt":
        return request.prompt
    if name == "negative":
        return request.negative_prompt
    if name == "seed":
        return request.seed
    if name == "steps":
        return request.steps
    if name == "cfg":
        return request.guidance_scale
    if name == "sampler":
        return request.sampler
    if name == "schedule":
        return request.schedule
    if name == "size":
        return (request.width, request.height)
    return settings.model_name


def _is_right(name: str, found: object, expected: object) -> bool:
    if name == "cfg":
        return isinstance(found, float | int) and abs(float(found) - float(expected)) < 1e-6  # type: ignore[arg-type]
    if name == "model":
        return _model_key(str(found)) == _model_key(str(expected))
    return found == expected


_DEFAULTS = GenerationRequest(model="unknown", prompt="")


def _default(name: str) -> object:
    if name == "model":
        return ""
    if name == "seed":
        return RANDOM_SEED
    probe = ImageSettings("", _DEFAULTS)
    return _value(probe, name)


def _said_unread(settings: ImageSettings, name: str) -> bool:
    """Whether the reader says it did not read ``name`` (:attr:`ImageSettings.read`)."""
    return not settings.read.issuperset(_REQUEST_FIELDS[name])


def _invented(settings: ImageSettings, name: str, expected: object, right: bool) -> bool:
    if right or _said_unread(settings, name):
        return False
    found = _value(settings, name)
    if expected is None:
        return not (name == "model" and not str(found).strip())
    return found == _default(name)


def _extras_found(extras: object, names: Iterable[str]) -> bool:
    if isinstance(extras, Mapping):
        keys = {str(key).casefold() for key in extras}
        return all(name.casefold() in keys for name in names)
    shown = json.dumps(extras, default=str).casefold()
    return all(name.casefold() in shown for name in names)


def score(sample: Sample, settings: ImageSettings | None, row: Row) -> None:
    """Add one image's results to its tool's row."""
    row.images += 1
    wrong: list[str] = []
    if settings is not None and settings.source in sample.sources:
        row.recognised += 1
    elif settings is not None:
        wrong.append(f"source {settings.source!r}")
    for name in CORE:
        expected = getattr(sample, name)
        right = invented = False
        if settings is not None:
            found = _value(settings, name)
            right = expected is not None and _is_right(name, found, expected)
            invented = _invented(settings, name, expected, right)
            row.invented += int(invented)
            if not right and (expected is not None or invented):
                mark = " (invented)" if invented else ""
                wrong.append(f"{name} {found!r}{mark}, held {expected!r}")
        row.add(name, expected is not None, right)
    model_hash = getattr(settings, "model_hash", _MISSING) if settings else None
    if sample.model_hash is not None and model_hash is not _MISSING:
        right = model_hash is not None and _same_hash(model_hash, sample.model_hash)
        row.add("hash", True, right)
        if settings is not None and not right:
            wrong.append(f"hash {model_hash!r}, held {sample.model_hash!r}")
    extras = getattr(settings, "extras", _MISSING) if settings else None
    if sample.extras and extras is not _MISSING:
        right = bool(extras) and _extras_found(extras, sample.extras)
        row.add("extras", True, right)
        if settings is not None and not right:
            wrong.append(f"extras {extras!r}, held {list(sample.extras)}")
    if wrong:
        row.misses.append(f"{sample.name}: " + "; ".join(wrong))


def run(folder: Path, tools: Sequence[str] = ()) -> list[Row]:
    """Write the corpus under ``folder``, read every image and count per tool."""
    rows: dict[str, Row] = {}
    wanted = {tool.casefold() for tool in tools}
    for index, sample in enumerate(corpus()):
        if wanted and sample.tool.casefold() not in wanted:
            continue
        row = rows.setdefault(sample.tool, Row(sample.tool))
        path = sample.write(folder / f"{index:02d}")
        try:
            settings: ImageSettings | None = read_image_settings(path)
        except SdStudioError as error:
            settings = None
            row.misses.append(f"{sample.name}: not read ({error})")
        score(sample, settings, row)
    return list(rows.values())


def _cell(row: Row, name: str, has_attribute: bool) -> str:
    if not has_attribute:
        return "—"
    held = row.held.get(name, 0)
    return f"{row.right.get(name, 0)}/{held}" if held else "·"


def table(rows: Sequence[Row]) -> str:
    """The rows as a text table, with a total row."""
    has_hash = "model_hash" in getattr(ImageSettings, "__slots__", ()) or hasattr(
        ImageSettings, "model_hash"
    )
    has_extras = "extras" in getattr(ImageSettings, "__slots__", ()) or hasattr(
        ImageSettings, "extras"
    )
    heads = ["tool", "imgs", "recog", *CORE, "hash", "extras", "invented", "overall"]
    total = Row("total")
    for row in rows:
        total.images += row.images
        total.recognised += row.recognised
        total.invented += row.invented
        for name, count in row.held.items():
            total.held[name] = total.held.get(name, 0) + count
            total.right[name] = total.right.get(name, 0) + row.right.get(name, 0)
    lines = []
    for row in [*rows, total]:
        cells = [row.tool, str(row.images), f"{row.recognised}/{row.images}"]
        cells += [_cell(row, name, True) for name in CORE]
        cells += [_cell(row, "hash", has_hash), _cell(row, "extras", has_extras)]
        cells += [str(row.invented), f"{row.overall():.0f}%"]
        lines.append(cells)
    widths = [max(len(head), *(len(line[i]) for line in lines)) for i, head in enumerate(heads)]

    def show(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join(
            [first, *(cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))]
        )

    rule = "-" * len(show(heads))
    return "\n".join([show(heads), rule, *map(show, lines[:-1]), rule, show(lines[-1])])


def summary(rows: Sequence[Row]) -> dict[str, object]:
    """The counts as JSON-ready data."""
    return {
        "tools": {
            row.tool: {
                "images": row.images,
                "recognised": row.recognised,
                "right": row.right,
                "held": row.held,
                "invented": row.invented,
                "overall_percent": round(row.overall(), 1),
                "misses": row.misses,
            }
            for row in rows
        }
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Build the corpus, read it and print the table (and ``--json`` data)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="also print the counts as JSON")
    parser.add_argument("--tool", action="append", default=[], help="only this tool's images")
    parser.add_argument(
        "--details", action="store_true", help="list, per image, what was not read right"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdstudio-corpus-") as folder:
        rows = run(Path(folder), args.tool)
    print(table(rows))
    if args.details:
        for row in rows:
            for miss in row.misses:
                print(f"{row.tool} / {miss}")
    if args.json:
        print(json.dumps(summary(rows), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
