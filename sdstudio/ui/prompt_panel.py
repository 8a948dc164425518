"""The prompt panel: every setting of a generation, turned into a GenerationRequest."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.families import FAMILIES
from sdstudio.engine.metadata.values import UNKNOWN_MODEL
from sdstudio.engine.models.defaults import ModelDefaults, defaults_for, size_for_source
from sdstudio.engine.models.families import Family
from sdstudio.engine.network_files import named_in
from sdstudio.engine.prompts import parse_prompt, toggle_lora_tag, toggle_word
from sdstudio.engine.request import RANDOM_SEED, GenerationRequest, round_to_multiple_of_8
from sdstudio.ui.advanced_settings import AdvancedSettings
from sdstudio.ui.hires_section import HiresSection
from sdstudio.ui.hypernet_picker import hypernet_picker, offer
from sdstudio.ui.model_picker import ModelPicker
from sdstudio.ui.network_picker import NetworkPicker
from sdstudio.ui.recommended_settings import FIELDS, RecommendationBar, TouchedFields
from sdstudio.ui.setting_rows import SamplerRow, SeedRow, SizeRow, StepsRow
from sdstudio.ui.styles_menu import StylesButton
from sdstudio.ui.text_encoder_picker import TextEncoderPicker
from sdstudio.ui.vae_picker import VaePicker, vae_row

NO_MODEL = (
    "No model was given: choose one in the Model box, or a .safetensors file or a "
    "diffusers folder with its … button."
)


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
        self.touched = TouchedFields()
        self._source_size: tuple[int, int] | None = None

        self.picker = ModelPicker()
        self.model = self.picker.box
        self.picker.picked.connect(self._on_model_picked)
        self.model.currentIndexChanged.connect(self._show_models_vae)
        self.model.currentTextChanged.connect(self._update_generate)
        self.recommendation = RecommendationBar()
        self.recommendation.accepted.connect(self.use_recommended)

        self.prompt = QPlainTextEdit(placeholderText="Describe the image…")
        self.negative = QPlainTextEdit(placeholderText="What to avoid (negative prompt)")
        line = self.prompt.fontMetrics().lineSpacing()
        self.prompt.setMinimumHeight(3 * line + 12)
        self.negative.setMinimumHeight(2 * line + 12)
        self.negative.setMaximumHeight(4 * line + 12)
        for edit in (self.prompt, self.negative):
            edit.setTabChangesFocus(True)
            edit.installEventFilter(self)
        self._last_prompt_edit = self.prompt

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
        self.hypernets = hypernet_picker(self.prompt, self.model_family)
        prompt_header = QHBoxLayout()
        prompt_header.addWidget(QLabel("Prompt"), 1)
        self.styles = StylesButton(lambda: (self.prompt.toPlainText(), self.negative.toPlainText()))
        for picker in (self.styles, self.loras, self.embeddings, self.hypernets):
            prompt_header.addWidget(picker)

        self.vae = VaePicker()
        self.vae.activated.connect(lambda _index: self.vae.remember(self.model_path()))
        self.vae.chosen.connect(self.vae_chosen)
        self.vae_row, self.draft_decode = vae_row(self.vae)

        self.sampler_row = SamplerRow()
        self.sampler, self.schedule = self.sampler_row.sampler, self.sampler_row.schedule
        for combo in (self.sampler, self.schedule):
            combo.activated.connect(lambda _index: self.touched.mark("sampler"))

        self.steps_row = StepsRow()
        self.steps, self.guidance = self.steps_row.steps, self.steps_row.guidance
        self.picker.box.currentIndexChanged.connect(lambda _index: self._follow_family())
        self.seed_row = SeedRow(lambda: self.last_seed)
        self.seed = self.seed_row.seed

        self.size_row = SizeRow()
        self.width_box, self.height_box = self.size_row.width_box, self.size_row.height_box

        self.strength = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=0.75, singleStep=0.05)
        self.strength.setDecimals(2)
        self.strength.setToolTip("How much of the source image to change (1 = all of it)")
        self.advanced = AdvancedSettings()
        self.advanced.control.image_size = lambda: self.size_row.size()
        self.advanced.toggle.toggled.connect(lambda on: self._reveal(self.advanced, on))
        self.hires = HiresSection(self.size_row)
        self.hires.toggle.toggled.connect(lambda on: self._reveal(self.hires, on))
        self.batch = self.advanced.batch
        self.clip_skip = self.advanced.clip_skip

        form = QFormLayout()
        form.addRow("Model", self.picker)
        form.addRow("VAE", self.vae_row)
        self.text_encoders = TextEncoderPicker()
        form.addRow("Text encoders", self.text_encoders)
        form.addRow("Sampler", self.sampler_row)
        form.addRow("Steps", self.steps_row)
        form.addRow("Seed", self.seed_row)
        form.addRow("Size", self.size_row)
        form.addRow("Strength", self.strength)
        self._form = form

        self.generate_button = QPushButton("Generate", objectName="generateButton")
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.setToolTip("Cancel (Esc)")
        self.cancel_button.clicked.connect(self.cancel_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)

        self._content = content = QWidget()
        layout = QVBoxLayout(content)
        layout.addLayout(prompt_header)
        layout.addWidget(self.prompt, 2)
        layout.addWidget(QLabel("Negative prompt"))
        layout.addWidget(self.negative, 1)
        layout.addLayout(form)
        layout.addWidget(self.hires)
        layout.addWidget(self.advanced)
        self.scroll_area = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area, 1)
        outer.addWidget(self.recommendation)
        outer.addLayout(buttons)
        self.recommendation.setContentsMargins(9, 0, 9, 0)
        buttons.setContentsMargins(9, 0, 9, 9)

        self.set_source_size(None)
        self._update_generate()
        self.width_box.valueChanged.connect(lambda _value: self.touched.mark("size"))
        self.height_box.valueChanged.connect(lambda _value: self.touched.mark("size"))
        self.steps.valueChanged.connect(lambda _value: self.touched.mark("steps"))
        self.guidance.valueChanged.connect(lambda _value: self.touched.mark("guidance"))

    def set_source_size(self, size: tuple[int, int] | None) -> str:
        """Show the source image's settings and take the size it proposes (its shape at
        the model's size); or hide them (text-to-image). Returns what to tell the user
        when the size is not the source's own."""
        self._source_size = size
        self._form.setRowVisible(self.strength, size is not None)
        self.advanced.set_source(size is not None)
        if size is None:
            return ""
        defaults = self._model_defaults()
        native = defaults.width if defaults is not None else 512
        width, height = size_for_source(*size, native)
        self.size_row.set_size(width, height)
        self.touched.mark("size")
        if (width, height) == size:
            return ""
        rounded = (round_to_multiple_of_8(size[0]), round_to_multiple_of_8(size[1]))
        why = "in multiples of 8" if (width, height) == rounded else "its shape at the model's size"
        return f"The source is {size[0]}×{size[1]}; generating at {width}×{height} ({why})."

    def request(self) -> GenerationRequest:
        """The request these settings describe (raises InvalidRequest when one is bad)."""
        model = self.model_path()
        if not model:
            raise InvalidRequest(NO_MODEL)
        request = GenerationRequest(
            model=model,
            prompt=self.prompt.toPlainText(),
            negative_prompt=self.negative.toPlainText(),
            sampler=self.sampler.currentText(),
            schedule=self.schedule.currentText(),
            steps=self.steps.value(),
            guidance_scale=round(self.guidance.value(), 2),
            distilled_guidance=round(self.steps_row.distilled.value(), 2),
            seed=int(self.seed.text() or RANDOM_SEED),
            width=self.size_row.size()[0],
            height=self.size_row.size()[1],
            vae=self.vae.value(),
            draft_decode=self.draft_decode.isChecked(),
            text_encoders=self.text_encoders.value(),
            hires=self.hires.values(),
            **self.advanced.values(),
        )
        return self.styles.apply(request)  # the checked styles, applied to the prompts

    def load(self, request: GenerationRequest) -> None:
        """Fill the panel from a request (settings it cannot show are left as they are);
        the settings it sets count as the user's: a model picked later keeps them."""
        if request.model != UNKNOWN_MODEL:  # settings that name no model keep the chosen one
            self.set_model(request.model)
        self.prompt.setPlainText(request.prompt)
        self.styles.set_checked([])  # the prompts hold the styles' text already
        self.negative.setPlainText(request.negative_prompt)
        self.sampler_row.choose(request.sampler, request.schedule)
        self.steps.setValue(request.steps)
        self.guidance.setValue(request.guidance_scale)
        self.steps_row.distilled.setValue(request.distilled_guidance)
        self.seed.setText("" if request.seed == RANDOM_SEED else str(request.seed))
        self.size_row.set_size(request.width, request.height)
        self.strength.setValue(request.strength)
        self.advanced.load(request)
        self.hires.load(request.hires)
        self.vae.select(request.vae)
        self.draft_decode.setChecked(request.draft_decode)
        self.text_encoders.select(request.text_encoders)
        self.touched.mark(*FIELDS)
        self.recommendation.withdraw()

    def model_path(self) -> str:
        """The chosen model's path: a listed model's, or the text typed."""
        return self.picker.model_path()

    def set_model(self, model: str) -> None:
        """Select a model by path (or listed name), adding it if it is new; the settings
        stay as they are."""
        self.picker.set_model(model)

    def pick_model(self, model: str) -> None:
        """Choose a model as the user's pick (as from the model manager): its recommended
        settings go where the user set nothing, and are offered for the rest."""
        self.picker.set_model(model)
        self.picker.learn_family(model)
        self._on_model_picked(model)

    def set_known_models(self, models: list[tuple[str, str, str, str]]) -> None:
        """List found models as (name, path, family, description), keeping the current choice."""
        # An SDXL refiner makes no image by itself: it is offered as a refiner only.
        self.picker.set_known_models([m for m in models if m[2] != Family.SDXL_REFINER])
        self.advanced.refiner.set_known_models(models)
        self._follow_family()
        self._update_generate()

    def set_networks(
        self,
        loras: list[tuple[str, str, str, str]],
        embeddings: list[tuple[str, str, str, str]],
        vaes: Sequence[tuple[str, ...]],
        text_encoders: Sequence[tuple[str, str, str, str]] = (),
        hypernets: Sequence[tuple[str, str, str, str]] = (),
    ) -> None:
        """Offer the LoRAs, embeddings and hypernetworks found as (name, description,
        family, family label), the VAE files as (name, path, description, kind) and the
        text encoder files as (name, path, kind, label)."""
        offer(self.hypernets, list(hypernets))
        self.loras.set_entries(loras)
        self.embeddings.set_entries(embeddings)
        self.vae.set_files(vaes)
        self.text_encoders.set_files(list(text_encoders))

    def set_model_vaes(self, choices: dict[str, str]) -> None:
        """The VAE chosen for each model (by model path), as kept in the settings."""
        self.vae.set_model_vaes(choices)
        self._show_models_vae()

    def model_family(self) -> str:
        """The chosen model's family (``sd1``, ``sd2``, ``sdxl``), if it is known."""
        return self.picker.model_family()

    def use_recommended(self) -> None:
        """Put in every setting the chosen model recommends."""
        recommended = self._recommended()
        if recommended is None:
            return
        with self.touched.quietly():
            for _field, _label, _matches, apply in self._settings_of(recommended):
                apply()
        self.touched.forget(*FIELDS)

    def minimumSizeHint(self) -> QSize:
        """As wide as the settings need (the panel scrolls only up and down)."""
        hint = super().minimumSizeHint()
        content = self._content.minimumSizeHint().width()
        scroll_bar = self.scroll_area.verticalScrollBar().sizeHint().width()
        return QSize(max(hint.width(), content + scroll_bar), hint.height())

    def set_busy(self, busy: bool) -> None:
        """Enable Cancel while a job runs (Generate stays on: it queues)."""
        self.cancel_button.setEnabled(busy)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Remember which prompt (positive or negative) an embedding goes into."""
        if event.type() == QEvent.Type.FocusIn and watched in (self.prompt, self.negative):
            self._last_prompt_edit = watched
        return super().eventFilter(watched, event)

    def _follow_family(self) -> None:
        """Offer the samplers and guidance controls of the chosen model's family."""
        kind = FAMILIES.get(self.picker.model_family())
        self.sampler_row.set_flow(kind is not None and kind.flow)
        self.steps_row.show_distilled(kind is not None and kind.distilled_guidance)
        self.size_row.set_multiple(kind.size_multiple if kind is not None else 8)
        self.vae.set_family(kind.id if kind is not None else "")
        alone = self.text_encoders.show_for(self.model_path(), self.picker.model_family())
        self._form.setRowVisible(self.text_encoders, alone)
        self.hires.set_family(kind)

    def _on_model_picked(self, _model: str) -> None:
        """The model's recommendations go where nothing was set; the rest are offered."""
        self._follow_family()  # its family may have been learnt only now
        recommended = self._recommended()
        if recommended is None:
            self.recommendation.withdraw()
            return
        kept: list[str] = []
        with self.touched.quietly():
            for field, label, matches, apply in self._settings_of(recommended):
                if field not in self.touched:
                    apply()
                elif not matches:
                    kept.append(label)
        if kept:
            self.recommendation.offer(self.picker.model_name(), recommended, kept)
        else:
            self.recommendation.withdraw()

    def _model_defaults(self) -> ModelDefaults | None:
        """What the chosen model recommends, if its family is known."""
        family = self.picker.model_family()
        if family in ("", "unknown"):
            return None
        v_prediction = "v-prediction" in self.picker.model_label()
        return defaults_for(family, self.picker.model_name(), v_prediction=v_prediction)

    def _recommended(self) -> ModelDefaults | None:
        """What the chosen model recommends, at the source's shape when one is set."""
        recommended = self._model_defaults()
        if recommended is not None and self._source_size is not None:
            width, height = size_for_source(*self._source_size, recommended.width)
            recommended = dataclasses.replace(recommended, width=width, height=height)
        return recommended

    def _settings_of(self, d: ModelDefaults) -> list[tuple[str, str, bool, Callable[[], None]]]:
        """(field, label, whether the panel has the value now, how to put it in)."""
        now = (self.width_box.value(), self.height_box.value())
        return [
            (
                "size",
                "size",
                now == (d.width, d.height),
                lambda: self.size_row.set_size(d.width, d.height),
            ),
            ("steps", "steps", self.steps.value() == d.steps, lambda: self.steps.setValue(d.steps)),
            (
                "guidance",
                "CFG scale",
                round(self.guidance.value(), 2) == d.guidance_scale,
                lambda: self.guidance.setValue(d.guidance_scale),
            ),
            (
                "sampler",
                "sampler",
                self.sampler_row.chosen() == (d.sampler, d.schedule),
                lambda: self.sampler_row.choose(d.sampler, d.schedule),
            ),
        ]

    def _update_generate(self) -> None:
        has_model = bool(self.model_path())
        self.generate_button.setEnabled(has_model)
        self.generate_button.setToolTip("Generate (Ctrl+Enter)" if has_model else NO_MODEL)

    def _reveal(self, section: QWidget, expanded: bool) -> None:
        if expanded:
            QTimer.singleShot(0, self, lambda: self.scroll_area.ensureWidgetVisible(section, 0, 0))

    def _show_models_vae(self) -> None:
        self.vae.show_for(self.model_path())

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
