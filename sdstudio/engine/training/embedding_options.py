"""What a textual-inversion run is asked to do, and the prompt templates its captions use.

AUTOMATIC1111's names: "Number of vectors per token" (``num_vectors``), "Initialization
text" (``init_text``), prompt template files whose lines hold ``[name]`` (the embedding)
and ``[filewords]`` (the image's caption). DreamArtist's contrastive mode adds a negative
embedding ``NAME-neg`` and the guidance scale the two are trained at.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.training.options import TrainingOptions, _plain

MAX_VECTORS = 75
"""A prompt chunk holds 75 tokens besides its start and end tokens (A1111's slider stops there)."""
NEGATIVE_SUFFIX = "-neg"
TEMPLATE_KINDS = ("subject", "style")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

SUBJECT_TEMPLATES = (
    "a photo of a [name], [filewords]",
    "a rendering of a [name], [filewords]",
    "a cropped photo of the [name], [filewords]",
    "the photo of a [name], [filewords]",
    "a photo of a clean [name], [filewords]",
    "a dark photo of the [name], [filewords]",
    "a photo of my [name], [filewords]",
    "a close-up photo of a [name], [filewords]",
    "a bright photo of the [name], [filewords]",
    "a photo of the [name], [filewords]",
    "a good photo of the [name], [filewords]",
    "a photo of one [name], [filewords]",
    "a rendition of the [name], [filewords]",
    "a photo of the small [name], [filewords]",
    "a photo of the large [name], [filewords]",
)
"""Subject prompts in the manner of A1111's ``subject_filewords.txt`` (after the
textual-inversion paper's object templates)."""

STYLE_TEMPLATES = (
    "a painting, art by [name], [filewords]",
    "a rendering, art by [name], [filewords]",
    "a cropped painting, art by [name], [filewords]",
    "the painting, art by [name], [filewords]",
    "a clean painting, art by [name], [filewords]",
    "a dark painting, art by [name], [filewords]",
    "a picture, art by [name], [filewords]",
    "a close-up painting, art by [name], [filewords]",
    "a bright painting, art by [name], [filewords]",
    "a good painting, art by [name], [filewords]",
    "a rendition, art by [name], [filewords]",
    "a small painting, art by [name], [filewords]",
    "a large painting, art by [name], [filewords]",
)
"""Style prompts in the manner of A1111's ``style_filewords.txt``."""


@dataclass(frozen=True, slots=True)
class EmbeddingOptions:
    """A textual-inversion run: the shared options plus the embedding's own."""

    base: TrainingOptions
    num_vectors: int = 1
    init_text: str = "*"
    template: Path | None = None
    """A prompt template file (lines with ``[name]`` and ``[filewords]``); wins over
    ``template_kind``."""
    template_kind: str = "subject"
    dreamartist: bool = False
    dreamartist_cfg: float = 5.0
    dreamartist_rec_weight: float = 0.0
    """DreamArtist's reconstruction loss weight (0: off): L1 between the training image
    and the decoded prediction of the clean latents."""
    overwrite: bool = False
    """Replace an embedding of the same name in the output folder."""
    embedding_dirs: tuple[Path, ...] = ()
    """The folders generation finds embeddings in; a file of the run's name there is refused."""

    @property
    def names(self) -> list[str]:
        """The embeddings trained: ``NAME``, and ``NAME-neg`` in DreamArtist mode."""
        name = self.base.name
        return [name, name + NEGATIVE_SUFFIX] if self.dreamartist else [name]

    def check(self) -> None:
        """Raise :class:`InvalidRequest` for a setting that cannot be trained with."""
        self.base.check()
        name = self.base.name
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidRequest(
                f"--name {name!r} is the word a prompt uses the embedding by: use letters, "
                "digits, '_', '-' or '.', starting with a letter or digit."
            )
        if not 1 <= self.num_vectors <= MAX_VECTORS:
            raise InvalidRequest(f"--num-vectors must be between 1 and {MAX_VECTORS}.")
        if self.template_kind not in TEMPLATE_KINDS:
            raise InvalidRequest(
                f"Unknown --template-kind {self.template_kind!r}; choose subject or style."
            )
        self.templates()
        if self.dreamartist and not 1 < self.dreamartist_cfg <= 30:
            raise InvalidRequest("--dreamartist-cfg must be above 1 and at most 30 (5 is usual).")
        if self.dreamartist_rec_weight < 0:
            raise InvalidRequest("--dreamartist-rec-weight cannot be negative.")
        if self.dreamartist_rec_weight and not self.dreamartist:
            raise InvalidRequest("--dreamartist-rec-weight needs --dreamartist.")

    def templates(self) -> list[str]:
        """The prompt templates, one of which each caption is made from."""
        if self.template is None:
            return list(SUBJECT_TEMPLATES if self.template_kind == "subject" else STYLE_TEMPLATES)
        try:
            text = Path(self.template).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidRequest(f"The --template file cannot be read: {error}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise InvalidRequest(f"The --template file {self.template} has no prompt lines.")
        return lines

    def record(self) -> dict[str, Any]:
        """The options as plain JSON values (kept with a saved state, compared on resume)."""
        record: dict[str, Any] = _plain(dataclasses.asdict(self))
        record["template_lines"] = self.templates()
        return record


def caption_from(template: str, name: str, filewords: str) -> str:
    """A template line with ``[name]`` and ``[filewords]`` filled in, as A1111 fills them."""
    return template.replace("[name]", name).replace("[filewords]", filewords)
