"""Where sdstudio keeps its data.

By default the platform's usual places (from platformdirs) are used, with
outputs in a visible folder under the user's Pictures. Setting
``SDSTUDIO_HOME=DIR`` moves everything under DIR, so tests and portable
installs never touch a user's real files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "sdstudio"
HOME_VARIABLE = "SDSTUDIO_HOME"


@dataclass(frozen=True, slots=True)
class AppPaths:
    """The folders the app reads and writes."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path
    outputs_dir: Path

    @property
    def models_dir(self) -> Path:
        """Models the app manages itself."""
        return self.data_dir / "models"

    @property
    def upscalers_dir(self) -> Path:
        """Upscaler model files (ESRGAN and the like) the app keeps, in its models folder
        (which is searched whole, so upscalers in any of its sub-folders are found)."""
        return self.models_dir / "upscalers"

    @property
    def controlnets_dir(self) -> Path:
        """ControlNet files and folders the app keeps, in its models folder (searched whole,
        as for upscalers)."""
        return self.models_dir / "controlnet"

    @property
    def wildcards_dir(self) -> Path:
        """The app's own wildcard files (``name.txt``, one choice a line), searched before
        those of the other tools' folders (see :mod:`sdstudio.engine.prompting.wildcards`)."""
        return self.data_dir / "wildcards"

    @property
    def styles_file(self) -> Path:
        """The app's own prompt styles, in A1111's ``styles.csv`` format (see
        :mod:`sdstudio.engine.prompting.styles`)."""
        return self.data_dir / "styles.csv"

    @property
    def inputs_dir(self) -> Path:
        """Copies of init images and masks, kept so that every image can be re-run."""
        return self.data_dir / "inputs"

    @property
    def settings_file(self) -> Path:
        """The settings file."""
        return self.config_dir / "settings.json"

    @property
    def queue_file(self) -> Path:
        """The jobs left in the queue when the app last quit, offered at the next start."""
        return self.data_dir / "queue.json"

    @property
    def history_db(self) -> Path:
        """The history database."""
        return self.data_dir / "history.sqlite3"

    @classmethod
    def default(cls, environ: dict[str, str] | None = None) -> AppPaths:
        """The paths for this user, moved under ``$SDSTUDIO_HOME`` when it is set."""
        env = os.environ if environ is None else environ
        home = env.get(HOME_VARIABLE, "").strip()
        if home:
            return cls.under(Path(home).expanduser())
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            log_dir=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
            outputs_dir=Path(platformdirs.user_pictures_dir()) / APP_NAME,
        )

    @classmethod
    def under(cls, root: Path) -> AppPaths:
        """All data under one folder."""
        root = root.resolve()
        return cls(
            config_dir=root / "config",
            data_dir=root / "data",
            cache_dir=root / "cache",
            log_dir=root / "logs",
            outputs_dir=root / "outputs",
        )
