"""The prompt panel: every setting of a generation, turned into a GenerationRequest."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QRegularExpression, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine import samplers
from sdstudio.engine.models.defaults import defaults_for
from sdstudio.engine.network_files import named_in
from sdstudio.engine.prompts import parse_prompt, toggle_lora_tag, toggle_word
from sdstudio.engine.request import (
    MAX_BATCH,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    RANDOM_SEED,
    GenerationRequest,
    round_to_multiple_of_8,
)
from sdstudio.engine.settings import model_key
from sdstudio.ui.network_picker import NetworkPicker

FAMILY_ROLE = Qt.ItemDataRole.UserRole + 1

SIZE_PRESETS = [
    ("Square 512", 512, 512),
    ("Portrait 2:3", 512, 768),
    ("Landscape 3:2", 768, 512),
    ("Wide 16:9", 912, 512),
    ("Square 768", 768, 768),
    ("SDXL 1024", 1024, 1024),
]


class PromptPanel(QWidget):
    """Collects the settings and asks for a generation or a cancel."""

    generate_requested = Signal()
    cancel_requested = Signal()
    vae_chosen = Signal(str, str)
    """The user chose a VAE (path, or empty for the model's own) for a model (path)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("promptPanel")
        self.last_seed: int | None = None

        self.model = QComboBox(editable=True)
        self.model.setToolTip("A diffusers folder or a .safetensors file")
        self.model.lineEdit().setPlaceholderText("Model folder or .safetensors file")
        self.model.activated.connect(self.apply_model_defaults)
        self.model.currentIndexChanged.connect(self._show_models_vae)
        browse = QToolButton(text="…", toolTip="Choose a model folder")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(browse)

        self.prompt = QPlainTextEdit(placeholderText="Describe the image…")
        self.negative = QPlainTextEdit(placeholderText="What to avoid (negative prompt)")
        self.prompt.setTabChangesFocus(True)
        self.negative.setTabChangesFocus(True)
        self.negative.setMaximumHeight(70)
        self._last_prompt_edit = self.prompt
        self.prompt.installEventFilter(self)
        self.negative.installEventFilter(self)

        self.loras = NetworkPicker(
            "LoRA",
            "No LoRA files found: add a folder with Models ▸ Manage",
            self._lora_in_use,
            self.model_family,
        )
        self.loras.chosen.connect(self._toggle_lora)
        self.embeddings = NetworkPicker(
            "Embedding",
            "No embeddings found: add a folder with Models ▸ Manage",
            lambda name: named_in(name, [self.prompt.toPlainText(), self.negative.toPlainText()]),
            self.model_family,
        )
        self.embeddings.chosen.connect(self._toggle_embedding)
        prompt_header = QHBoxLayout()
        prompt_header.addWidget(QLabel("Prompt"), 1)
        prompt_header.addWidget(self.loras)
        prompt_header.addWidget(self.embeddings)

        self.vae = QComboBox()
        self.vae.addItem("Model's own", "")
        self.vae.setToolTip("A VAE file to decode images with, remembered for each model")
        self.vae.activated.connect(self._on_vae_activated)
        self._model_vaes: dict[str, str] = {}

        self.sampler = QComboBox()
        self.sampler.addItems(samplers.sampler_names())
        self.schedule = QComboBox()
        self._chosen_schedule: str | None = None
        self.schedule.activated.connect(
            lambda _index: setattr(self, "_chosen_schedule", self.schedule.currentText())
        )
        self.sampler.currentTextChanged.connect(self._update_schedules)

        self.steps = QSpinBox(minimum=1, maximum=MAX_STEPS, value=20)
        self.guidance = QDoubleSpinBox(minimum=0.0, maximum=50.0, value=7.0, singleStep=0.5)
        self.guidance.setDecimals(1)

        self.seed = QLineEdit(placeholderText="Random")
        self.seed.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"-1|\d{0,20}"), self.seed)
        )
        self.seed.setToolTip(f"0 to {MAX_SEED}; empty or -1 draws a new random seed each time")
        random_seed = QToolButton(text="Random", toolTip="Draw a new random seed each time")
        random_seed.clicked.connect(self.seed.clear)
        reuse_seed = QToolButton(text="Last", toolTip="Reuse the seed of the last image")
        reuse_seed.clicked.connect(self._reuse_seed)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(random_seed)
        seed_row.addWidget(reuse_seed)

        self.width_box = QSpinBox(minimum=MIN_SIZE, maximum=MAX_SIZE, value=512, singleStep=64)
        self.height_box = QSpinBox(minimum=MIN_SIZE, maximum=MAX_SIZE, value=512, singleStep=64)
        for box in (self.width_box, self.height_box):
            box.setSuffix(" px")
        swap = QToolButton(text="⇄", toolTip="Swap width and height")
        swap.clicked.connect(self._swap_size)
        self.presets = QComboBox()
        self.presets.addItem("Presets…")
        for name, width, height in SIZE_PRESETS:
            self.presets.addItem(f"{name} ({width}×{height})", (width, height))
        self.presets.activated.connect(self._apply_preset)
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box)
        size_row.addWidget(swap)

        self.batch = QSpinBox(minimum=1, maximum=MAX_BATCH, value=1)
        self.strength = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=0.75, singleStep=0.05)
        self.strength.setDecimals(2)
        self.strength.setToolTip("How much of the source image to change (1 = all of it)")

        form = QFormLayout()
        form.addRow("Model", model_row)
        form.addRow("VAE", self.vae)
        form.addRow("Sampler", self.sampler)
        form.addRow("Schedule", self.schedule)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Seed", seed_row)
        form.addRow("Size", size_row)
        form.addRow("", self.presets)
        form.addRow("Batch", self.batch)
        form.addRow("Strength", self.strength)
        self._form = form

        self.generate_button = QPushButton("Generate", objectName="generateButton")
        self.generate_button.setToolTip("Generate (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.setToolTip("Cancel (Esc)")
        self.cancel_button.clicked.connect(self.cancel_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)

        layout = QVBoxLayout(self)
        layout.addLayout(prompt_header)
        layout.addWidget(self.prompt, 2)
        layout.addWidget(QLabel("Negative prompt"))
        layout.addWidget(self.negative, 1)
        layout.addLayout(form)
        layout.addLayout(buttons)

        self.sampler.setCurrentText("DPM++ 2M")
        self._update_schedules("DPM++ 2M")
        self.set_source_size(None)

    def set_source_size(self, size: tuple[int, int] | None) -> None:
        """Show the strength control and use the source's size, or hide it (text-to-image)."""
        self._form.setRowVisible(self.strength, size is not None)
        if size is not None:
            self.width_box.setValue(round_to_multiple_of_8(size[0]))
            self.height_box.setValue(round_to_multiple_of_8(size[1]))

    def request(self) -> GenerationRequest:
        """The request these settings describe (raises InvalidRequest when one is bad)."""
        return GenerationRequest(
            model=self.model_path(),
            prompt=self.prompt.toPlainText(),
            negative_prompt=self.negative.toPlainText(),
            sampler=self.sampler.currentText(),
            schedule=self.schedule.currentText(),
            steps=self.steps.value(),
            guidance_scale=round(self.guidance.value(), 2),
            seed=int(self.seed.text() or RANDOM_SEED),
            width=self.width_box.value() // 8 * 8,
            height=self.height_box.value() // 8 * 8,
            batch_size=self.batch.value(),
            vae=self.vae_value(),
        )

    def load(self, request: GenerationRequest) -> None:
        """Fill the panel from a request (settings it cannot show are left as they are)."""
        self.set_model(request.model)
        self.prompt.setPlainText(request.prompt)
        self.negative.setPlainText(request.negative_prompt)
        if request.sampler in samplers.sampler_names():
            self._chosen_schedule = request.schedule
            self.sampler.setCurrentText(request.sampler)
            self._update_schedules(request.sampler)
        self.steps.setValue(request.steps)
        self.guidance.setValue(request.guidance_scale)
        self.seed.setText("" if request.seed == RANDOM_SEED else str(request.seed))
        self.width_box.setValue(request.width)
        self.height_box.setValue(request.height)
        self.batch.setValue(request.batch_size)
        self.strength.setValue(request.strength)
        self.set_vae(request.vae)

    def model_path(self) -> str:
        """The chosen model's path: a listed model's, or the text typed."""
        text = self.model.currentText().strip()
        index = self.model.currentIndex()
        if index >= 0 and self.model.itemText(index) == text and self.model.itemData(index):
            return str(self.model.itemData(index))
        return text

    def set_model(self, model: str) -> None:
        """Select a model by path, adding it to the list if it is new."""
        if not model:
            return
        index = self.model.findData(model)
        if index < 0:
            index = self.model.findText(model)
        if index < 0:
            self.model.insertItem(0, model, model)
            index = 0
        self.model.setCurrentIndex(index)

    def set_known_models(self, models: list[tuple[str, str, str, str]]) -> None:
        """List found models as (name, path, family, description), keeping the current choice."""
        current = self.model_path()
        for name, path, family, description in models:
            if self.model.findData(path) >= 0:
                continue
            self.model.addItem(name, path)
            self.model.setItemData(self.model.count() - 1, family, FAMILY_ROLE)
            self.model.setItemData(
                self.model.count() - 1, f"{description}\n{path}", Qt.ItemDataRole.ToolTipRole
            )
        if current:
            self.set_model(current)

    def set_networks(
        self,
        loras: list[tuple[str, str, str, str]],
        embeddings: list[tuple[str, str, str, str]],
        vaes: list[tuple[str, str, str]],
    ) -> None:
        """Offer the LoRAs and embeddings found as (name, description, family, family
        label), and the VAE files as (name, path, description)."""
        self.loras.set_entries(loras)
        self.embeddings.set_entries(embeddings)
        current = self.vae_value()
        self.vae.clear()  # files found before may be gone
        self.vae.addItem("Model's own", "")
        for name, path, description in vaes:
            if self.vae.findData(path) < 0:
                self.vae.addItem(name, path)
                self.vae.setItemData(
                    self.vae.count() - 1, f"{description}\n{path}", Qt.ItemDataRole.ToolTipRole
                )
        self.set_vae(current)

    def set_model_vaes(self, choices: dict[str, str]) -> None:
        """The VAE chosen for each model (by model path), as kept in the settings."""
        self._model_vaes = dict(choices)
        self._show_models_vae()

    def vae_value(self) -> str:
        """The chosen VAE's path (or name); empty for the model's own."""
        return str(self.vae.currentData() or "")

    def set_vae(self, vae: str) -> None:
        """Select a VAE by path or name, adding it to the list if it is new."""
        index = self.vae.findData(vae)
        if index < 0:
            index = self.vae.findText(vae)
        if index < 0:
            self.vae.addItem(Path(vae.replace("\\", "/")).name, vae)
            index = self.vae.count() - 1
        self.vae.setCurrentIndex(index)

    def _show_models_vae(self) -> None:
        """Select the VAE remembered for the model now chosen."""
        self.set_vae(self._model_vaes.get(model_key(self.model_path()), ""))

    def _on_vae_activated(self, _index: int) -> None:
        model = model_key(self.model_path())
        if not model:
            return
        vae = self.vae_value()
        if vae:
            self._model_vaes[model] = vae
        else:
            self._model_vaes.pop(model, None)
        self.vae_chosen.emit(model, vae)

    def model_family(self) -> str:
        """The chosen model's family (``sd1``, ``sd2``, ``sdxl``), if it is a listed model."""
        index = self.model.currentIndex()
        if index < 0 or self.model.itemText(index) != self.model.currentText():
            return ""
        return str(self.model.itemData(index, FAMILY_ROLE) or "")

    def _lora_in_use(self, name: str) -> bool:
        tags = parse_prompt(self.prompt.toPlainText()).loras
        return name.lower() in {tag.lower() for tag, _weight in tags}

    def _toggle_lora(self, name: str) -> None:
        self.prompt.setPlainText(toggle_lora_tag(self.prompt.toPlainText(), name))
        self.prompt.moveCursor(self.prompt.textCursor().MoveOperation.End)

    def _toggle_embedding(self, name: str) -> None:
        edit = self._last_prompt_edit
        edit.setPlainText(toggle_word(edit.toPlainText(), name))
        edit.moveCursor(edit.textCursor().MoveOperation.End)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Remember which prompt (positive or negative) an embedding goes into."""
        if event.type() == QEvent.Type.FocusIn and watched in (self.prompt, self.negative):
            self._last_prompt_edit = watched  # type: ignore[assignment]
        return super().eventFilter(watched, event)

    def set_busy(self, busy: bool) -> None:
        """Enable Cancel while a job runs (Generate stays on: it queues)."""
        self.cancel_button.setEnabled(busy)

    def apply_model_defaults(self, index: int) -> None:
        """When the user picks a listed model, use the settings that suit it."""
        family = self.model.itemData(index, FAMILY_ROLE)
        if not family:
            return
        d = defaults_for(str(family), self.model.itemText(index))
        self.width_box.setValue(d.width)
        self.height_box.setValue(d.height)
        self.steps.setValue(d.steps)
        self.guidance.setValue(d.guidance_scale)
        self._chosen_schedule = d.schedule
        self.sampler.setCurrentText(d.sampler)
        self._update_schedules(d.sampler)

    def _update_schedules(self, sampler: str) -> None:
        """Offer the sampler's schedule types, keeping the user's choice where it applies."""
        self.schedule.clear()
        supported = samplers.schedules_for(sampler)
        self.schedule.addItems(supported)
        chosen = self._chosen_schedule
        default = samplers.get_sampler(sampler).default_schedule
        self.schedule.setCurrentText(chosen if chosen in supported else default)

    def _reuse_seed(self) -> None:
        if self.last_seed is not None:
            self.seed.setText(str(self.last_seed))

    def _swap_size(self) -> None:
        width, height = self.width_box.value(), self.height_box.value()
        self.width_box.setValue(height)
        self.height_box.setValue(width)

    def _apply_preset(self, index: int) -> None:
        size = self.presets.itemData(index)
        if size:
            self.width_box.setValue(size[0])
            self.height_box.setValue(size[1])
        self.presets.setCurrentIndex(0)

    def _browse_model(self) -> None:
        start = str(Path(self.model.currentText()).expanduser().parent)
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder", start)
        if folder:
            self.set_model(folder)
