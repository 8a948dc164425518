"""The model manager: the models found and the memory each needs (with a warning where
one will not fit this computer), folders to add, downloads with progress and cancel."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QRunnable, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStyle,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.control.annotators import FOLDER_NAME as ANNOTATOR_FOLDER
from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.models.catalog import Catalog
from sdstudio.engine.models.download import (
    ANNOTATOR_DOWNLOADS,
    TINY_VAE_DOWNLOADS,
    annotator_snapshot,
    tiny_vae_folder,
)
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.settings import Settings, save_settings
from sdstudio.ui.model_list import ModelListLoader
from sdstudio.ui.model_memory import MemoryEstimator

SUGGESTED = (
    ("stabilityai/sd-turbo", "SD-Turbo: 1-4 steps, the quickest on a CPU", 2.6),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "Stable Diffusion 1.5", 2.1),
    ("stabilityai/stable-diffusion-xl-base-1.0", "SDXL base 1.0 (needs a GPU)", 7.0),
)
COLUMNS = ("Name", "Kind", "Family", "Format", "Size", "Memory", "Source", "Place")
MEMORY_COLUMN = COLUMNS.index("Memory")
KINDS = {"checkpoint": "Model", "lora": "LoRA", "embedding": "Embedding", "vae": "VAE"}
KINDS |= {"text_encoder": "Text encoder", "upscaler": "Upscaler"}
KINDS |= {"controlnet": "ControlNet", "ipadapter": "IP-Adapter", "clip_vision": "CLIP vision"}
KINDS |= {"annotator": "Annotator", "tiny_vae": "Tiny VAE"}
KIND_ROLE = Qt.ItemDataRole.UserRole + 1


class _Download(QRunnable):
    """Runs one download on a pool thread; reports through the dialog's signals."""

    def __init__(
        self,
        repo_id: str,
        cancel: threading.Event,
        signals: ModelManager,
        annotators: Path | None = None,
    ) -> None:
        """``annotators``: the folder an annotator network is downloaded into (None: a
        diffusers model, into the Hugging Face cache)."""
        super().__init__()
        self.repo_id = repo_id
        self.cancel = cancel
        self.signals = signals
        self.annotators = annotators

    def run(self) -> None:
        from sdstudio.engine.models.download import download_annotator, download_model

        def progress(done: int, total: int) -> None:
            self.signals.download_progress.emit(done, total)

        try:
            if self.annotators is not None:
                path = download_annotator(
                    self.repo_id, self.annotators, progress=progress, cancel=self.cancel
                )
            else:
                path = download_model(self.repo_id, progress=progress, cancel=self.cancel)
        except SdStudioError as error:
            self.signals.download_failed.emit(self.repo_id, str(error))
        except Exception as error:  # the dialog must report, not die
            self.signals.download_failed.emit(self.repo_id, f"{type(error).__name__}: {error}")
        else:
            self.signals.download_finished.emit(self.repo_id, str(path))


class ModelManager(QDialog):
    """Lists models where they are; picks one to generate with; adds folders; downloads
    and removes app downloads. Adding or removing a folder never changes the model chosen."""

    download_progress = Signal(int, int)
    download_finished = Signal(str, str)
    download_failed = Signal(str, str)
    models_changed = Signal()
    model_chosen = Signal(str)
    """The user picked a model (its path) to generate with: "Use" or a double-click."""
    listed = Signal()
    """The table shows a finished scan."""

    def __init__(self, paths: AppPaths, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(900, 520)
        self.paths = paths
        self.settings = settings
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._cancel: threading.Event | None = None

        self.table = QTreeWidget()
        self.table.setHeaderLabels(list(COLUMNS))
        self.table.headerItem().setToolTip(
            MEMORY_COLUMN,
            "The memory a model needs for an image of its native size: its weights in the "
            "number format it runs in here, and room to compute",
        )
        self.table.setRootIsDecorated(False)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda item, _column: self.use(item))
        self.status = QLabel()

        self.use_button = QPushButton("Use", enabled=False)
        self.use_button.setToolTip("Generate with the selected model (or double-click it)")
        self.use_button.clicked.connect(self.use_selected)

        add_folder = QPushButton("Add folder…")
        add_folder.setToolTip(
            "A folder of models, or the root of AUTOMATIC1111, ComfyUI or InvokeAI"
        )
        add_folder.clicked.connect(self._choose_folder)
        self.remove_folder = QComboBox()
        self.remove_folder.setPlaceholderText("Remove a folder…")
        self.remove_folder.activated.connect(self._remove_folder)
        self.remove_button = QPushButton("Delete download")
        self.remove_button.setToolTip(
            "Delete a model sdstudio downloaded (others are never deleted)"
        )
        self.remove_button.clicked.connect(self._remove_selected)

        self.repo = QComboBox(editable=True)
        self.repo.lineEdit().setPlaceholderText("Hugging Face repo id, e.g. stabilityai/sd-turbo")
        for repo_id, description, size_gb in SUGGESTED:
            self.repo.addItem(f"{repo_id}  ({description}, about {size_gb:g} GB)", repo_id)
        offered = {**ANNOTATOR_DOWNLOADS, **TINY_VAE_DOWNLOADS}
        for repo_id, (description, size_gb) in offered.items():
            self.repo.addItem(f"{repo_id}  ({description}, about {size_gb:g} GB)", repo_id)
        self.repo.setCurrentIndex(-1)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel_download)
        self.progress = QProgressBar(textVisible=True)
        self.progress.setFormat("")

        folders = QHBoxLayout()
        folders.addWidget(self.use_button)
        folders.addWidget(add_folder)
        folders.addWidget(self.remove_folder, 1)
        folders.addWidget(self.remove_button)
        download = QHBoxLayout()
        download.addWidget(self.repo, 1)
        download.addWidget(self.download_button)
        download.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(folders)
        layout.addWidget(QLabel("Download from the Hugging Face hub (into its shared cache):"))
        layout.addLayout(download)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.download_progress.connect(self._on_progress)
        self.download_finished.connect(self._on_finished)
        self.download_failed.connect(self._on_failed)
        self._scanner = ModelListLoader(paths, settings, self)
        self._scanner.scanned.connect(self._show_catalog)
        self._rows: dict[str, QTreeWidgetItem] = {}
        self._memory = MemoryEstimator(paths, self)
        self._memory.estimated.connect(self._show_memory)
        self.refresh()

    def refresh(self) -> None:
        """List the models again; the folders are scanned on a pool thread."""
        self.status.setText("Looking for models…")
        self._scanner.reload(self.settings)

    def _show_catalog(self, catalog: Catalog) -> None:
        self.table.setSortingEnabled(False)
        self._rows = {}
        self.table.clear()
        for entry in catalog.entries:
            item = QTreeWidgetItem(
                [
                    entry.name,
                    KINDS.get(entry.kind, entry.kind),
                    entry.family_label if entry.family != "unknown" else "",
                    entry.format,
                    _size(entry.size_bytes),
                    "",
                    entry.source,
                    entry.path,
                ]
            )
            item.setToolTip(0, f"{entry.kind}: {entry.path}")
            item.setData(0, Qt.ItemDataRole.UserRole, entry.path)
            item.setData(0, KIND_ROLE, entry.kind)
            self.table.addTopLevelItem(item)
            if entry.kind == "checkpoint":
                self._rows[entry.path] = item
        annotators = self._annotator_rows()
        self.remove_folder.clear()
        self.remove_folder.addItems(list(self.settings.model_folders))
        self.remove_folder.setCurrentIndex(-1)
        skipped = f", {len(catalog.skipped)} unreadable skipped" if catalog.skipped else ""
        count = len(catalog.entries) + annotators
        self.status.setText(f"{count} model{'' if count == 1 else 's'}{skipped}")
        self.table.setSortingEnabled(True)
        self._update_buttons()
        models = [(e.path, e.family) for e in catalog.entries if e.kind == "checkpoint"]
        self._memory.estimate(self.settings, models)
        self.listed.emit()

    def _annotator_rows(self) -> int:
        """Rows for the preprocessor networks sdstudio downloaded (the catalog leaves the
        annotators folder out: they are not models to generate with), so that they can
        be deleted too; how many."""
        folder = self.paths.models_dir / ANNOTATOR_FOLDER
        shown = 0
        for repo_id in self.settings.downloaded_models:
            snapshot = (
                annotator_snapshot(folder, repo_id) if repo_id in ANNOTATOR_DOWNLOADS else None
            )
            if snapshot is None:
                continue
            try:
                size = sum(p.stat().st_size for p in snapshot.iterdir() if p.is_file())
            except OSError:  # a file gone meanwhile: the row still offers the deletion
                size = 0
            name = repo_id.rpartition("/")[2]
            row = [name, KINDS["annotator"], "", "transformers", _size(size), "", "app"]
            item = QTreeWidgetItem([*row, str(snapshot)])
            item.setToolTip(0, f"{ANNOTATOR_DOWNLOADS[repo_id][0]}: {snapshot}")
            item.setData(0, Qt.ItemDataRole.UserRole, str(snapshot))
            item.setData(0, KIND_ROLE, "annotator")
            self.table.addTopLevelItem(item)
            shown += 1
        return shown

    def _show_memory(self, path: str, text: str, tip: str, warn: bool) -> None:
        """Show the memory a model needs, warning where it will not fit this computer."""
        item = self._rows.get(path)
        if item is None:
            return
        item.setText(MEMORY_COLUMN, text)
        item.setToolTip(MEMORY_COLUMN, tip)
        if warn:
            warning = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
            item.setIcon(MEMORY_COLUMN, warning)

    def use_selected(self) -> None:
        """Choose the selected model to generate with."""
        items = self.table.selectedItems()
        if items:
            self.use(items[0])

    def use(self, item: QTreeWidgetItem) -> None:
        """Choose a listed model to generate with (LoRAs, embeddings and VAEs are chosen
        in the prompt panel)."""
        if item.data(0, KIND_ROLE) == "annotator":
            self.status.setText(f"{item.text(0)} is a preprocessor's network: it runs by itself.")
            return
        if item.data(0, KIND_ROLE) != "checkpoint":
            self.status.setText(
                f"{item.text(0)} is a {item.text(1)}: choose it in the prompt panel "
                "(LoRA and Embedding buttons, VAE box)."
            )
            return
        self.model_chosen.emit(str(item.data(0, Qt.ItemDataRole.UserRole)))
        self.status.setText(f"Generating with {item.text(0)}.")

    def add_folder(self, folder: Path) -> None:
        """Add a model folder (or a tool's root) and list its models."""
        from sdstudio.engine.models.catalog import add_model_folder

        self._change(lambda: add_model_folder(self.settings, folder))

    def start_download(self) -> None:
        """Download the repo id in the box, with progress and cancel."""
        repo_id = self.repo.currentData() or self.repo.currentText().strip().split(" ")[0]
        if not repo_id or "/" not in repo_id:
            self.status.setText("Give a repo id such as stabilityai/sd-turbo.")
            return
        self._cancel = threading.Event()
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Downloading {repo_id}…")
        annotators = None
        if repo_id in ANNOTATOR_DOWNLOADS:  # into models/annotators, where preprocessors look
            annotators = self.paths.models_dir / ANNOTATOR_FOLDER
        elif repo_id in TINY_VAE_DOWNLOADS:  # into models/vae_approx, where previews look
            annotators = tiny_vae_folder(self.paths.models_dir, repo_id)
        self._pool.start(_Download(repo_id, self._cancel, self, annotators))

    def cancel_download(self) -> None:
        """Stop the running download (it resumes where it stopped next time)."""
        if self._cancel is not None:
            self._cancel.set()

    def shutdown(self) -> None:
        """Cancel a download and wait for its thread and for a running scan."""
        self.cancel_download()
        self._pool.waitForDone()
        self._scanner.shutdown()
        self._memory.shutdown()

    def done(self, result: int) -> None:  # QDialog override: closing stops the worker
        self.shutdown()
        super().done(result)

    def _on_progress(self, done: int, total: int) -> None:
        scale = max(1, total // 1_000_000)
        self.progress.setRange(0, max(1, total // scale))
        self.progress.setValue(done // scale)
        self.progress.setFormat(f"{done / 1e9:.2f} of {total / 1e9:.2f} GB")

    def _on_finished(self, repo_id: str, path: str) -> None:
        if repo_id not in self.settings.downloaded_models:  # "Delete download" may remove it
            import dataclasses

            downloaded = (*self.settings.downloaded_models, repo_id)
            self._change(lambda: dataclasses.replace(self.settings, downloaded_models=downloaded))
        if repo_id in ANNOTATOR_DOWNLOADS or repo_id in TINY_VAE_DOWNLOADS:  # not models
            self._download_ended(f"Downloaded {repo_id} into {path}.")
        else:
            self._download_ended(f"Downloaded {repo_id}.")

    def _on_failed(self, repo_id: str, message: str) -> None:
        self._download_ended(message)

    def _download_ended(self, message: str) -> None:
        self._cancel = None
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.status.setText(message)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder")
        if folder:
            self.add_folder(Path(folder))

    def _remove_folder(self, index: int) -> None:
        from sdstudio.engine.models.catalog import remove_model_folder

        folder = self.remove_folder.itemText(index)
        self._change(lambda: remove_model_folder(self.settings, folder))

    def _selected_repo(self) -> str | None:
        from sdstudio.engine.models.removal import repo_id_of

        items = self.table.selectedItems()
        if not items:
            return None
        repo = repo_id_of(Path(str(items[0].data(0, Qt.ItemDataRole.UserRole))))
        return repo if repo in self.settings.downloaded_models else None

    def _remove_selected(self) -> None:
        from sdstudio.engine.models.removal import remove_downloaded

        repo = self._selected_repo()
        if repo is not None:
            cache = (
                self.paths.models_dir / ANNOTATOR_FOLDER if repo in ANNOTATOR_DOWNLOADS else None
            )
            if repo in TINY_VAE_DOWNLOADS:
                cache = tiny_vae_folder(self.paths.models_dir, repo)
            self._change(lambda: remove_downloaded(self.settings, repo, cache))

    def _change(self, make: Callable[[], Settings]) -> None:
        try:
            settings = make()
            save_settings(self.paths, settings)
        except SdStudioError as error:
            self.status.setText(str(error))
            return
        self.settings = settings
        self.refresh()
        self.models_changed.emit()

    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(self._selected_repo() is not None)
        items = self.table.selectedItems()
        self.use_button.setEnabled(bool(items) and items[0].data(0, KIND_ROLE) == "checkpoint")


def _size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 100_000_000 else f"{size / 1e6:.1f} MB"
