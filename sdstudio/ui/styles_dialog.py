"""The "Edit styles" dialog: sdstudio's own styles as a table of name, prompt and negative
prompt, written back to its ``styles.csv`` on Save; "Import A1111 styles" copies the
styles of the A1111 installs found (or of a chosen ``styles.csv``) into the table."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SdStudioError
from sdstudio.engine.prompting import styles

COLUMNS = ("Name", "Prompt", "Negative prompt")


class StylesDialog(QDialog):
    """Edits the own styles file; A1111's files are only read."""

    def __init__(self, own: Path, others: list[Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Styles")
        self.own = own
        self.others = others
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.table.setColumnWidth(1, 260)
        note = QLabel(
            "Put {prompt} in a style's text where your prompt goes; without it the style "
            "is added after your prompt."
        )
        note.setWordWrap(True)
        add = QPushButton("Add")
        add.clicked.connect(lambda: self.add_row(styles.Style("")))
        remove = QPushButton("Remove")
        remove.clicked.connect(self.remove_selected)
        self.import_button = QPushButton("Import A1111 styles…")
        self.import_button.clicked.connect(self.import_a1111)
        row = QHBoxLayout()
        for button in (add, remove, self.import_button):
            row.addWidget(button)
        row.addStretch(1)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addWidget(buttons)
        self.resize(720, 420)
        try:
            for style in styles.read_styles(own):
                self.add_row(style)
        except SdStudioError as error:
            QMessageBox.warning(self, "Styles", str(error))

    def add_row(self, style: styles.Style) -> None:
        """Add a style at the end of the table (a name already there is replaced)."""
        for row in range(self.table.rowCount()):
            if self._text(row, 0) == style.name and style.name:
                break
        else:
            row = self.table.rowCount()
            self.table.insertRow(row)
        for column, text in enumerate((style.name, style.prompt, style.negative_prompt)):
            self.table.setItem(row, column, QTableWidgetItem(text))

    def remove_selected(self) -> None:
        """Remove the selected rows."""
        for row in sorted({index.row() for index in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(row)

    def rows(self) -> list[styles.Style]:
        """The table's styles (rows left wholly empty are skipped)."""
        found = []
        for row in range(self.table.rowCount()):
            name, prompt, negative = (self._text(row, column) for column in range(3))
            if name or prompt or negative:
                found.append(styles.Style(name.strip(), prompt, negative))
        return found

    def import_a1111(self, path: Path | None = None) -> int:
        """Add the styles of the A1111 files found (or of ``path``, or of a file the user
        picks when none is found) to the table; returns how many were read."""
        files = [path] if path is not None else list(self.others)
        if not files:
            chosen, _ = QFileDialog.getOpenFileName(self, "A1111 styles.csv", "", "Styles (*.csv)")
            if not chosen:
                return 0
            files = [Path(chosen)]
        count = 0
        try:
            for file in files:
                for style in styles.read_styles(file):
                    self.add_row(style)
                    count += 1
        except SdStudioError as error:
            QMessageBox.warning(self, "Import A1111 styles", str(error))
        return count

    def save(self) -> None:
        """Write the table to the styles file and close (a bad name keeps it open)."""
        try:
            styles.write_styles(self.own, self.rows())
        except SdStudioError as error:
            QMessageBox.warning(self, "Styles", str(error))
            return
        self.accept()

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""
