"""Files shipped in ``resources/``: icons, and later model configs.

They install as the ``sdstudio.resources`` package; in a checkout that was not
installed, or a frozen build, they are found next to the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_path(name: str) -> Path:
    """The path of a shipped resource file, such as ``"sdstudio.svg"``."""
    try:
        candidate = Path(str(resources.files("sdstudio.resources") / name))
    except ModuleNotFoundError:
        candidate = None
    if candidate is not None and candidate.exists():
        return candidate
    return Path(__file__).resolve().parents[1] / "resources" / name
