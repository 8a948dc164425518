"""The settings window: where images go, the look, the device, GPU memory use and how
step previews are drawn.

The same settings as ``sdstudio-cli settings``, kept in the same file. The
outputs folder is checked (created, written to) before it is saved, and the
next image already goes there; the theme changes at once, the previews from the next
generation; the device and the memory mode apply from the next start.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.fileio import check_writable_folder
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings, change_setting, save_settings

THEMES = (("system", "Follow the system"), ("light", "Light"), ("dark", "Dark"))
DEVICES = (
    ("auto", "Automatic (CUDA, then Apple MPS, then CPU)"),
    ("cuda", "NVIDIA GPU (CUDA)"),
    ("mps", "Apple GPU (MPS)"),
    ("cpu", "CPU"),
)
MEMORY_MODES = (
    ("auto", "Automatic (from the model's size and the free GPU memory)"),
    ("fast", "Fast: the whole model on the GPU"),
    ("balanced", "Balanced: VAE tiling (fused attention needs no slicing)"),
    ("low", "Low: parts of the model wait in main memory"),
    ("group", "Lower: layers stream from main memory (large models)"),
    ("sequential", "Lowest: each layer moves to the GPU when used (slowest)"),
)
COMPILE = (
    ("off", "Off"),
    ("on", "On: faster on CUDA GPUs after the first image of each size"),
)
PREVIEWS = (
    ("auto", "Automatic (a tiny VAE where one is found)"),
    ("tiny", "Tiny VAE (TAESD and its kin; say when none is found)"),
    ("linear", "Fast approximation (small, no extra model)"),
)


class PreferencesDialog(QDialog):
    """Edits the settings; ``saved`` carries the new :class:`Settings` after OK."""

    saved = Signal(object)

    def __init__(self, paths: AppPaths, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.paths = paths
        self.settings = settings

        self.outputs = QLineEdit(str(settings.outputs_path(paths)))
        self.outputs.setToolTip("New images are saved here, in one folder per day")
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._choose_outputs)
        default = QPushButton("Default")
        default.setToolTip(str(paths.outputs_dir))
        default.clicked.connect(lambda: self.outputs.setText(str(paths.outputs_dir)))
        show = QPushButton("Open")
        show.setToolTip("Show the folder in the file manager")
        show.clicked.connect(self._open_outputs)
        outputs_row = QHBoxLayout()
        outputs_row.addWidget(self.outputs, 1)
        outputs_row.addWidget(browse)
        outputs_row.addWidget(default)
        outputs_row.addWidget(show)

        self.theme = _combo(THEMES, settings.theme)
        self.device = _combo(DEVICES, settings.device)
        self.memory = _combo(MEMORY_MODES, settings.memory)
        self.compile = _combo(COMPILE, settings.compile)
        self.compile.setToolTip(
            "torch.compile fuses the denoiser's work into fewer GPU kernels: faster on CUDA "
            "GPUs after a first image of each size that compiles (a minute or more)"
        )
        self.previews = _combo(PREVIEWS, settings.previews)
        self.previews.setToolTip(
            "A tiny VAE (models/vae_approx, or a download in Models ▸ Manage models) draws "
            "step previews that look like the final image, within 2 % of the time"
        )

        form = QFormLayout()
        form.addRow("Save images in", outputs_row)
        form.addRow("Look", self.theme)
        form.addRow("Device", self.device)
        form.addRow("GPU memory", self.memory)
        form.addRow("Previews", self.previews)
        form.addRow("Compile the denoiser", self.compile)
        note = QLabel("The device and GPU memory settings apply from the next start.")
        note.setWordWrap(True)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b;")
        self.error.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.resize(640, self.sizeHint().height())

    def chosen(self) -> Settings:
        """The settings as chosen in the window (raises for an unusable value)."""
        outputs = Path(self.outputs.text().strip()).expanduser()
        if not self.outputs.text().strip():
            raise SdStudioError("Choose a folder for the images.")
        if not outputs.is_absolute():
            raise SdStudioError(f"The images folder must be a full path, not {outputs}.")
        settings = self.settings
        default = outputs.resolve() == self.paths.outputs_dir.resolve()
        settings = change_setting(settings, "outputs_dir", "" if default else str(outputs))
        settings = change_setting(settings, "theme", self.theme.currentData())
        settings = change_setting(settings, "device", self.device.currentData())
        settings = change_setting(settings, "previews", self.previews.currentData())
        settings = change_setting(settings, "compile", self.compile.currentData())
        return change_setting(settings, "memory", self.memory.currentData())

    def save(self) -> bool:
        """Check and save the settings; close the window when that worked."""
        try:
            settings = self.chosen()
            check_writable_folder(settings.outputs_path(self.paths))
            save_settings(self.paths, settings)
        except SdStudioError as error:
            self.error.setText(f"Not saved: {error}")
            self.error.show()
            return False
        self.settings = settings
        self.saved.emit(settings)
        self.accept()
        return True

    def _choose_outputs(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Save images in", self.outputs.text().strip()
        )
        if folder:
            self.outputs.setText(folder)

    def _open_outputs(self) -> None:
        folder = Path(self.outputs.text().strip()).expanduser()
        if folder.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


def _combo(choices: tuple[tuple[str, str], ...], current: str) -> QComboBox:
    combo = QComboBox()
    for value, label in choices:
        combo.addItem(label, value)
    combo.setCurrentIndex(max(0, combo.findData(current)))
    return combo
