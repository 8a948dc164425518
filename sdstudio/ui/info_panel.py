"""The image info panel: every setting of the image on show, to copy or to use again.

It describes a history entry (sdstudio's own record, trusted) or an opened
file (its settings as read from its metadata, from whichever tool made it).
The panel only asks; the main window decides what "use" means by connecting
the ``use_*_requested`` signals.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine import samplers
from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.history import HistoryEntry
from sdstudio.engine.metadata import (
    ImageRecord,
    ImageSettings,
    read_image_settings,
    refiner_names,
    wildcard_names,
)
from sdstudio.engine.metadata.a1111 import format_parameters
from sdstudio.engine.prompting.per_image import resolved_of
from sdstudio.engine.refine.detailer_settings import detailed_text
from sdstudio.engine.request import RANDOM_SEED, GenerationRequest, InpaintArea, Mode
from sdstudio.ui.control_lines import control_lines
from sdstudio.ui.upscale_lines import upscale_lines

EMPTY = "No image selected"
_MODES = {
    Mode.TXT2IMG: "text to image",
    Mode.IMG2IMG: "image to image",
    Mode.INPAINT: "inpainting",
    Mode.UPSCALE: "upscale",
}
_RESIZE = {"resize": "just resize", "crop": "crop and resize", "fill": "resize and fill"}
_SOURCES = {
    "sdstudio": "sdstudio",
    "a1111": "AUTOMATIC1111",
    "comfyui": "ComfyUI",
    "invokeai": "InvokeAI",
    "fooocus": "Fooocus",
    "novelai": "NovelAI",
    "swarmui": "SwarmUI",
    "stabilitymatrix": "Stability Matrix",
    "tensorart": "TensorArt",
    "webdemo": "a web demo",
}

Line = list[tuple[str, str]]
"""One line of the panel: (label, value) pairs shown side by side."""


@dataclass(frozen=True, slots=True)
class ShownImage:
    """The image the panel describes, with what is known of how it was made."""

    path: str
    request: GenerationRequest | None = None
    """None when the file holds no settings sdstudio can read (see :attr:`problem`)."""
    model_name: str = ""
    model_hash: str = ""
    record: ImageRecord | None = None
    """sdstudio's own record: LoRAs, VAE, device and time."""
    entry: HistoryEntry | None = None
    settings: ImageSettings | None = None
    """The settings read from a file that the history does not list."""
    extras: Mapping[str, str] = field(default_factory=dict)
    """Another tool's settings that sdstudio does not apply."""
    problem: str = ""

    @classmethod
    def of_entry(cls, entry: HistoryEntry) -> ShownImage:
        """A history image; its record is read from the history, not from the file."""
        record: ImageRecord | None = None
        with contextlib.suppress(SdStudioError):
            record = ImageRecord.from_json(entry.record_json)
        try:
            request = record.request if record is not None else entry.request
        except SdStudioError as error:
            return cls(entry.path, entry=entry, problem=str(error))
        return cls(entry.path, request, entry.model_name, entry.model_hash, record, entry=entry)

    @classmethod
    def of_file(
        cls, path: Path, find_entry: Callable[[Path], HistoryEntry | None] | None = None
    ) -> ShownImage:
        """An image file: the history's entry when it lists the file, else the
        settings its metadata holds (or why it holds none)."""
        if find_entry is not None:
            with contextlib.suppress(SdStudioError):
                entry = find_entry(path)
                if entry is not None:
                    return cls.of_entry(entry)
        try:
            settings = read_image_settings(path)
        except SdStudioError as error:
            return cls(str(path), problem=str(error))
        return cls(
            str(path),
            settings.request,
            settings.model_name,
            settings.model_hash,
            settings.record,
            settings=settings,
            extras=settings.extras,
        )

    @property
    def source(self) -> str:
        """The tool whose metadata the settings come from."""
        if self.settings is None:
            return "sdstudio"
        return _SOURCES.get(self.settings.source, self.settings.source)

    def parameters(self) -> str:
        """The settings as AUTOMATIC1111 ``parameters`` text, as sdstudio writes it into
        its images; another tool's A1111 text is given as the image holds it."""
        if self.request is None:
            return ""
        settings = self.settings
        if settings is not None and settings.source == "a1111" and settings.parameters:
            return settings.parameters
        record = self.record
        if record is not None:
            return format_parameters(
                record.request,
                model_name=record.model_name,
                model_hash=record.model_hash,
                version=f"sdstudio {record.app_version}".strip(),
                extra=record.extra,
            )
        return format_parameters(
            self.request, model_name=self.model_name, model_hash=self.model_hash
        )

    def lines(self) -> list[Line]:
        """What the panel shows, line by line."""
        request = self.request
        if request is None:
            return [[("File", self.path)], [("No settings", self.problem)]]
        if request.mode is Mode.UPSCALE:
            extra = self.record.extra if self.record is not None else {}
            return [*upscale_lines(request, extra), self._origin_line()]
        lines = self._prompt_lines(request)
        lines.append(self._model_line(request))
        lines.append(_sampling_line(request, self._distilled()))
        lines.append(_mode_line(request))
        if request.mode is Mode.INPAINT:
            lines.append(_inpaint_line(request))
        lines += upscale_lines(request, {})
        if request.hires is not None:
            lines.append([("Hires fix", request.hires.describe())])
        if request.fast is not None:
            lines.append([("Fast mode", request.fast.describe())])
        extra = self.record.extra if self.record is not None else {}
        if request.refiner is not None:
            refiner = refiner_names.title(request.refiner, extra)
            lines.append([("Refiner", refiner), ("Switch at", f"{request.refiner.switch_at:g}")])
        if request.detailer is not None:
            detailed = detailed_text(extra.get("detailer"))
            result = [("Result", detailed)] if detailed else []
            lines.append([("Detailer", request.detailer.describe()), *result])
        control, shown = control_lines(request, extra, self.extras)
        lines += control
        for key, label in (("loras", "LoRAs"), ("embeddings", "Embeddings")):
            used = _networks(extra.get(key))
            if used:
                lines.append([(label, used)])
        shown = {*shown, *wildcard_names.WRITTEN}
        also = ", ".join(f"{k}: {v}" for k, v in self.extras.items() if k not in shown)
        if also:
            lines.append([("Also in the image, not applied", also)])
        lines.append(self._origin_line())
        return lines

    def _prompt_lines(self, request: GenerationRequest) -> list[Line]:
        """The prompts; for an image made from wildcard templates, the prompts it was made
        with and the templates."""
        extra = self.record.extra if self.record is not None else {}
        resolved = resolved_of(extra)
        templates = self.extras
        if resolved is None and wildcard_names.TEMPLATE in templates:
            # Read from another tool's text: the prompts made the image; the templates show.
            resolved = (request.prompt, request.negative_prompt)
            request = request.replace(
                prompt=templates[wildcard_names.TEMPLATE],
                negative_prompt=templates.get(
                    wildcard_names.NEGATIVE_TEMPLATE, request.negative_prompt
                ),
            )
        if resolved is None:
            lines: list[Line] = [[("Prompt", request.prompt or "(empty)")]]
            if request.negative_prompt:
                lines.append([("Negative prompt", request.negative_prompt)])
            return lines
        lines = [[("Prompt", resolved[0] or "(empty)")], [("Template", request.prompt)]]
        if resolved[1]:
            lines.append([("Negative prompt", resolved[1])])
        if request.negative_prompt and request.negative_prompt != resolved[1]:
            lines.append([("Negative template", request.negative_prompt)])
        return lines

    def _distilled(self) -> bool:
        """Whether the image's model took the distilled guidance (Flux.1 dev)."""
        if self.record is not None:
            return bool(self.record.extra.get("distilled_guidance"))
        return self.settings is not None and "distilled_guidance" in self.settings.read

    def _model_line(self, request: GenerationRequest) -> Line:
        model = self.model_name or request.model
        if self.model_hash:
            model = f"{model} [{self.model_hash}]"
        extra = self.record.extra if self.record is not None else {}
        vae = extra.get("vae")
        vae_name = vae.get("name") if isinstance(vae, dict) else None
        encoders = [("Text encoders", ", ".join(request.text_encoders))]
        return [
            ("Model", model),
            ("VAE", str(vae_name or request.vae or "the model's own")),
            *(encoders if request.text_encoders else []),
            ("Clip skip", str(request.clip_skip)),
        ]

    def _origin_line(self) -> Line:
        line: Line = []
        if self.entry is not None:
            line.append(("Image", f"#{self.entry.id}"))
        line.append(("File", self.path))
        record = self.record
        if record is not None and record.device:
            line.append(("Made", f"in {record.duration_s:.1f} s on {record.device}"))
        if record is not None and record.created:
            line.append(("Created", record.created[:19].replace("T", " ")))
        if self.settings is not None and self.settings.source != "sdstudio":
            line.append(("Settings from", self.source))
        return line


def _sampling_line(request: GenerationRequest, distilled: bool) -> Line:
    sampler = request.sampler
    if request.schedule != samplers.AUTOMATIC:
        sampler = f"{sampler} · {request.schedule}"
    seed = "random" if request.seed == RANDOM_SEED else str(request.seed)
    return [
        ("Sampler", sampler),
        ("Steps", str(request.steps)),
        ("CFG scale", f"{request.guidance_scale:g}"),
        *([("Distilled CFG scale", f"{request.distilled_guidance:g}")] if distilled else []),
        ("Seed", seed),
        ("Size", f"{request.width}×{request.height}"),
    ]


def _mode_line(request: GenerationRequest) -> Line:
    line: Line = [("Mode", _MODES[request.mode])]
    if request.mode is not Mode.TXT2IMG:
        line.append(("Strength", f"{request.strength:g}"))
        if not (request.mode is Mode.INPAINT and request.inpaint_area is InpaintArea.MASKED):
            line.append(("Resize mode", _RESIZE.get(request.resize_mode.value, "")))
        line.append(("Source", Path(request.init_image or "").name))
    return line


def _inpaint_line(request: GenerationRequest) -> Line:
    area = "whole picture"
    if request.inpaint_area is InpaintArea.MASKED:
        area = f"only masked, {request.masked_padding} px padding"
    return [
        ("Mask blur", f"{request.mask_blur} px"),
        ("Inpaint area", area),
        ("Masked content", request.masked_content.value.replace("-", " ")),
    ]


def _networks(used: object) -> str:
    """``name (weight)`` of each LoRA or embedding a record lists."""
    if not isinstance(used, list):
        return ""
    names = []
    for item in used:
        if isinstance(item, dict) and item.get("name"):
            weight = item.get("weight")
            number = isinstance(weight, int | float) and not isinstance(weight, bool)
            names.append(f"{item['name']} ({weight:g})" if number else str(item["name"]))
    return ", ".join(names)


def _html(lines: list[Line]) -> str:
    rows = []
    for line in lines:
        parts = (
            f"<b>{html.escape(label)}:</b> {html.escape(value)}" for label, value in line if value
        )
        rows.append("&nbsp;&nbsp;·&nbsp;&nbsp;".join(parts))
    return "<br>".join(rows)


class InfoPanel(QDockWidget):
    """A dock, "Image info", describing the image on show with Copy parameters, Use
    these settings and Use seed. Give it what the window shows: :meth:`show_entry`,
    :meth:`show_file`, :meth:`clear`."""

    use_entry_requested = Signal(object)
    """Load this :class:`HistoryEntry`'s settings (and its source image) for editing."""
    use_file_requested = Signal(object)
    """Load these :class:`ImageSettings`, read from a file the history does not list."""
    use_seed_requested = Signal(object)
    """Put this seed (an int, up to 2**64-1) into the prompt panel."""

    def __init__(
        self,
        find_entry: Callable[[Path], HistoryEntry | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Image info", parent)
        self.setObjectName("imageInfo")
        self.find_entry = find_entry
        self.shown: ShownImage | None = None

        self.text = QTextBrowser()
        self.text.setObjectName("imageInfoText")
        self.text.setOpenLinks(False)
        self.text.setFrameShape(QTextBrowser.Shape.NoFrame)
        self.copy_button = QPushButton("Copy parameters")
        self.copy_button.setToolTip("Copy the settings as AUTOMATIC1111 text (its PNG Info)")
        self.use_button = QPushButton("Use these settings")
        self.use_button.setToolTip("Load these settings into the prompt panel")
        self.seed_button = QPushButton("Use seed")
        self.seed_button.setToolTip("Put this image's seed into the prompt panel")
        self.copy_button.clicked.connect(self.copy_parameters)
        self.use_button.clicked.connect(self.use_settings)
        self.seed_button.clicked.connect(self.use_seed)

        buttons = QVBoxLayout()
        for button in (self.copy_button, self.use_button, self.seed_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        body = QWidget()
        layout = QHBoxLayout(body)
        layout.setContentsMargins(6, 0, 6, 4)
        layout.addWidget(self.text, 1)
        layout.addLayout(buttons)
        self.setWidget(body)
        self.clear()

    def show_entry(self, entry: HistoryEntry) -> None:
        """Describe a history image."""
        self._show(ShownImage.of_entry(entry))

    def show_file(self, path: Path) -> None:
        """Describe an image file (the history's entry when it lists it)."""
        self._show(ShownImage.of_file(path, self.find_entry))

    @Slot()
    def clear(self) -> None:
        """No image on show."""
        self.shown = None
        self.text.setPlainText(EMPTY)
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._update_buttons()

    def plain_text(self) -> str:
        """What the panel shows, as plain text."""
        return self.text.toPlainText()

    @Slot()
    def copy_parameters(self) -> None:
        """Put the settings on the clipboard as AUTOMATIC1111 ``parameters`` text."""
        text = self.shown.parameters() if self.shown is not None else ""
        if not text:
            return
        QGuiApplication.clipboard().setText(text)
        self.copy_button.setText("Copied")
        QTimer.singleShot(1500, self, lambda: self.copy_button.setText("Copy parameters"))

    @Slot()
    def use_settings(self) -> None:
        """Ask the window to load the settings of the image on show."""
        shown = self.shown
        if shown is None or shown.request is None:
            return
        if shown.entry is not None:
            self.use_entry_requested.emit(shown.entry)
        elif shown.settings is not None:
            self.use_file_requested.emit(shown.settings)

    @Slot()
    def use_seed(self) -> None:
        """Ask the window to put the seed of the image on show into the prompt panel."""
        shown = self.shown
        if shown is not None and shown.request is not None and shown.request.seed != RANDOM_SEED:
            self.use_seed_requested.emit(shown.request.seed)

    def _show(self, shown: ShownImage) -> None:
        self.shown = shown
        self.text.setHtml(_html(shown.lines()))
        self.text.verticalScrollBar().setValue(0)
        self._update_buttons()

    def _update_buttons(self) -> None:
        request = self.shown.request if self.shown is not None else None
        self.copy_button.setEnabled(request is not None)
        self.use_button.setEnabled(request is not None)
        self.seed_button.setEnabled(request is not None and request.seed != RANDOM_SEED)
