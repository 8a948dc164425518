"""The model row of the prompt panel: the models found, and a model file or folder chosen."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QMenu,
    QMessageBox,
    QToolButton,
    QWidget,
)

from sdstudio.engine.models.lookup import display_name

FAMILY_ROLE = Qt.ItemDataRole.UserRole + 1
LABEL_ROLE = Qt.ItemDataRole.UserRole + 2
"""The family's label, such as ``SD 2.x (v-prediction)``."""

MODEL_SUFFIXES = (".safetensors", ".ckpt")
"""Single-file checkpoints the engine loads (a ``.ckpt`` only when it holds nothing but
weights: it is read with a restricted loader)."""
FILE_FILTER = (
    "Models (*.safetensors *.ckpt model_index.json);;"
    "Checkpoints (*.safetensors *.ckpt);;"
    "Diffusers folder: its model_index.json (model_index.json)"
)


def model_choice(path: Path) -> tuple[Path, str]:
    """The model a chosen file or folder gives, and what is wrong with it (empty when
    nothing): a ``model_index.json`` stands for its diffusers folder."""
    if path.name == "model_index.json":
        path = path.parent
    if not path.exists():
        return path, f"{path} does not exist."
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return path, ""
        return path, (
            f"{path.name} is not a diffusers model folder: it has no model_index.json. "
            "Choose the folder that holds model_index.json, or a .safetensors file."
        )
    if path.suffix.lower() in MODEL_SUFFIXES:
        return path, ""
    return path, (
        f"{path.name} is not a model sdstudio opens: choose a .safetensors (or .ckpt) "
        "checkpoint, or a diffusers folder."
    )


def shown_name(model: str) -> str:
    """How a model is shown in the box: the name of a path's file or folder (``org/name``
    for the Hugging Face cache); a name as it is."""
    path = Path(model).expanduser()
    return display_name(path) if path.is_absolute() else model


class ModelPicker(QWidget):
    """A box of the models found (by name, with the path as data and tooltip) and a
    "…" menu to choose a model file or a diffusers folder."""

    picked = Signal(str)
    """The user chose a model (its path): from the list, a file or a folder."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.box = QComboBox(editable=True)
        self.box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.box.setMinimumContentsLength(10)
        self.box.setToolTip("The model to generate with: a diffusers folder or a .safetensors file")
        edit = self.box.lineEdit()
        if edit is not None:
            edit.setPlaceholderText("Choose a model…")
        self.box.activated.connect(lambda _index: self.picked.emit(self.model_path()))
        menu = QMenu(self)
        menu.addAction("Choose a model file…", self.choose_file)
        menu.addAction("Choose a diffusers folder…", self.choose_folder)
        self.browse = QToolButton(text="…", toolTip="Choose a model file or a diffusers folder")
        self.browse.setMenu(menu)
        self.browse.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.problem = ""
        """The last chosen file or folder that is not a model, and why."""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.box, 1)
        layout.addWidget(self.browse)

    def model_path(self) -> str:
        """The chosen model's path: a listed model's, or the text typed."""
        text = self.box.currentText().strip()
        index = self.box.currentIndex()
        if index >= 0 and self.box.itemText(index) == text and self.box.itemData(index):
            return str(self.box.itemData(index))
        return text

    def set_model(self, model: str) -> None:
        """Select a model by path (or listed name), adding it by its name if it is new."""
        if not model:
            return
        index = self.box.findData(model)
        if index < 0:
            index = self.box.findText(model)
        if index < 0:
            self.box.insertItem(0, shown_name(model), model)
            self.box.setItemData(0, model, Qt.ItemDataRole.ToolTipRole)
            index = 0
        self.box.setCurrentIndex(index)

    def set_known_models(self, models: list[tuple[str, str, str, str]]) -> None:
        """List found models as (name, path, family, description); a model already in
        the box takes its listed name. The choice is kept, and none is made when there
        was none."""
        current = self.model_path()
        with QSignalBlocker(self.box):
            for name, path, family, description in models:
                index = self.box.findData(path)
                if index < 0:
                    self.box.addItem(name, path)
                    index = self.box.count() - 1
                else:
                    self.box.setItemText(index, name)
                label = description.split(" · ")[0]
                self.box.setItemData(index, family, FAMILY_ROLE)
                self.box.setItemData(index, label, LABEL_ROLE)
                self.box.setItemData(index, f"{description}\n{path}", Qt.ItemDataRole.ToolTipRole)
            if not current:
                self.box.setCurrentIndex(-1)
                self.box.setEditText("")
        if current and self.model_path() != current:
            self.set_model(current)

    def model_family(self) -> str:
        """The chosen model's family (``sd1``, ``sd2``, ``sdxl``), if it is known."""
        return str(self._current_data(FAMILY_ROLE) or "")

    def model_label(self) -> str:
        """The chosen model's family label, if it is known."""
        return str(self._current_data(LABEL_ROLE) or "")

    def model_name(self) -> str:
        """The chosen model as the box shows it."""
        return self.box.currentText().strip()

    def choose_file(self) -> None:
        """Ask for a model file (or a diffusers folder's model_index.json) and use it."""
        file, _ = QFileDialog.getOpenFileName(
            self, "Choose a model file", self._start_folder(), FILE_FILTER
        )
        if file:
            self.use_path(Path(file))

    def choose_folder(self) -> None:
        """Ask for a diffusers model folder and use it."""
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a diffusers model folder", self._start_folder()
        )
        if folder:
            self.use_path(Path(folder))

    def use_path(self, path: Path) -> bool:
        """Choose a model file or folder as the user's pick, or say why it is not one."""
        path, problem = model_choice(path)
        self.problem = problem
        if problem:
            box = QMessageBox(QMessageBox.Icon.Warning, "sdstudio", problem, parent=self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()
            return False
        self.set_model(str(path))
        self.learn_family(str(path))
        self.picked.emit(str(path))
        return True

    def learn_family(self, model: str) -> None:
        """Read the family of a model the list does not describe (a header or config)."""
        index = self.box.findData(model)
        if index < 0 or self.box.itemData(index, FAMILY_ROLE):
            return
        from sdstudio.engine.models.identification import family_of

        family, label = family_of(Path(model))
        self.box.setItemData(index, family, FAMILY_ROLE)
        self.box.setItemData(index, label, LABEL_ROLE)
        self.box.setItemData(index, f"{label}\n{model}", Qt.ItemDataRole.ToolTipRole)

    def _current_data(self, role: int) -> object:
        index = self.box.currentIndex()
        if index < 0 or self.box.itemText(index) != self.box.currentText():
            return None
        return self.box.itemData(index, role)

    def _start_folder(self) -> str:
        model = self.model_path()
        return str(Path(model).expanduser().parent) if model else ""
