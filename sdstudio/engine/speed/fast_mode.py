"""The settings of an opt-in "fast" mode: a way to skip part of the denoiser's work on
some steps, traded against how far the image moves from the full computation.

Every mode is deterministic: the same request gives the same pixels, so the mode and
its parameters are recorded with the image (``Fast mode: deep-cache, Fast interval: 3``,
see :mod:`~sdstudio.engine.metadata.fast_names`) and a re-run uses them again.

- ``first-block-cache`` (transformer families): each step runs the first transformer
  block; when its output moved less than ``threshold`` (relative mean absolute change)
  since the last full step, the other blocks' cached contribution is reused.
- ``deep-cache`` (UNet families): every ``interval``-th step runs the whole UNet and
  keeps the features coming up the decoder at skip branch ``branch``; the steps in
  between run only the shallow blocks above that branch and reuse them (DeepCache).
  With ``layer`` L they run less still: only down layers 0..L of the branch's block and
  the up layers that take their skips (the paper's caching, ``layer=0``); without it,
  whole blocks (how images made before ``layer`` existed were computed).
- ``token-merging`` (UNet families): in the highest-resolution transformer blocks,
  ``ratio`` of the tokens are merged into similar ones before self-attention and
  copied back after it (ToMe for Stable Diffusion).
- ``taylorseer-cache`` (transformer families): the first ``warmup`` steps and then one
  step in ``interval`` run the whole transformer; the steps between skip its blocks and
  forecast its output from a Taylor expansion (to ``order``) of the last full ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sdstudio.engine.errors import InvalidRequest

FIRST_BLOCK_CACHE = "first-block-cache"
DEEP_CACHE = "deep-cache"
TOKEN_MERGING = "token-merging"
TAYLORSEER_CACHE = "taylorseer-cache"
METHODS = (FIRST_BLOCK_CACHE, DEEP_CACHE, TOKEN_MERGING, TAYLORSEER_CACHE)
TRANSFORMER_METHODS = frozenset({FIRST_BLOCK_CACHE, TAYLORSEER_CACHE})
UNET_METHODS = frozenset({DEEP_CACHE, TOKEN_MERGING})

DEFAULT_THRESHOLD = 0.05
MAX_THRESHOLD = 1.0
DEFAULT_INTERVAL = 3
MAX_INTERVAL = 10
DEFAULT_BRANCH = 0
MAX_BRANCH = 3
"""Skip branches run from 0 (shallowest: the least work per cached step) to the UNet's
number of down blocks minus 2 (3 blocks below the top for SD 1.x; SDXL has 3 levels)."""
WHOLE_BLOCK = "block"
"""The short form's ``layer`` value for DeepCache over whole blocks (``layer=block``)."""
DEFAULT_LAYER: int | None = None
"""The ``layer`` of new DeepCache requests (the CLI's and the app's): whole blocks, which
is also what a request or record that names none (made before layers could be chosen)
reads as. Measured (``benchmarks/fast_modes.py``, SD 1.5's architecture, random weights,
float32, 6 steps, a quiet 2-core CPU): at 512 px, interval 3, the full UNet denoised in
73.5 s, whole blocks in 48.9 s (1.5x, mean absolute pixel difference 0.80 of 255) and
inside the top block (``layer=0``) in 37.0 s (2.0x, 1.41). ``layer=0`` is a third
faster but moves the image 1.75 times as far, so new requests cache whole blocks and
``layer=0`` is offered as the faster choice."""
MAX_LAYER = 3
DEFAULT_RATIO = 0.5
MAX_RATIO = 0.75
"""ToMe for SD merges at most three tokens of four (each 2x2 patch keeps one)."""
DEFAULT_WARMUP = 3
MAX_WARMUP = 50
DEFAULT_ORDER = 1
MAX_ORDER = 2
"""TaylorSeer's expansion: 1 extrapolates the last change, 2 also its curvature."""

PARAMETERS: dict[str, tuple[str, ...]] = {
    FIRST_BLOCK_CACHE: ("threshold",),
    DEEP_CACHE: ("interval", "branch", "layer"),
    TOKEN_MERGING: ("ratio",),
    TAYLORSEER_CACHE: ("interval", "warmup", "order"),
}
"""The parameters each method takes (the others keep their defaults)."""


@dataclass(frozen=True, slots=True)
class FastMode:
    """An opt-in fast mode and its parameters (only the method's own are used)."""

    method: str
    threshold: float = DEFAULT_THRESHOLD
    """first-block-cache: reuse when the first block's output changed less than this."""
    interval: int = DEFAULT_INTERVAL
    """deep-cache: every how many steps the whole UNet runs (2: every other step)."""
    branch: int = DEFAULT_BRANCH
    """deep-cache: the skip branch whose features are cached (0: the shallowest)."""
    layer: int | None = None
    """deep-cache: cache inside the branch's blocks, keeping down layers 0..layer and the
    up layers that take their skips (the DeepCache paper); None: whole blocks."""
    ratio: float = DEFAULT_RATIO
    """token-merging: the share of tokens merged before self-attention."""
    warmup: int = DEFAULT_WARMUP
    """taylorseer-cache: how many first steps run in full before any forecast."""
    order: int = DEFAULT_ORDER
    """taylorseer-cache: the order of the Taylor expansion that forecasts the output."""

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise InvalidRequest(
                f"Fast mode {_shown(self.method)} is unknown; valid: {', '.join(METHODS)}."
            )
        for name in ("interval", "branch", "warmup", "order"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequest(f"Fast {name} must be a whole number, not {_shown(value)}.")
        for name in ("threshold", "ratio"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidRequest(f"Fast {name} must be a number, not {_shown(value)}.")
            object.__setattr__(self, name, float(value))
        if not 0.0 <= self.threshold <= MAX_THRESHOLD:
            raise InvalidRequest(
                f"Fast threshold must be between 0 and {MAX_THRESHOLD:g}, not {self.threshold:g}."
            )
        if not 2 <= self.interval <= MAX_INTERVAL:
            raise InvalidRequest(
                f"Fast interval must be between 2 and {MAX_INTERVAL} steps, not {self.interval}."
            )
        if self.layer is not None and (
            not isinstance(self.layer, int) or isinstance(self.layer, bool)
        ):
            raise InvalidRequest(
                f"Fast layer must be a whole number (or {WHOLE_BLOCK}), not {_shown(self.layer)}."
            )
        if self.layer is not None and not 0 <= self.layer <= MAX_LAYER:
            raise InvalidRequest(f"Fast layer must be between 0 and {MAX_LAYER}, not {self.layer}.")
        if not 0 <= self.branch <= MAX_BRANCH:
            raise InvalidRequest(
                f"Fast branch must be between 0 and {MAX_BRANCH}, not {self.branch}."
            )
        if not 1 <= self.warmup <= MAX_WARMUP:
            raise InvalidRequest(
                f"Fast warmup must be between 1 and {MAX_WARMUP} steps, not {self.warmup}."
            )
        if not 1 <= self.order <= MAX_ORDER:
            raise InvalidRequest(f"Fast order must be 1 or {MAX_ORDER}, not {self.order}.")
        if not 0.0 < self.ratio <= MAX_RATIO:
            raise InvalidRequest(
                f"Fast ratio must be above 0 and at most {MAX_RATIO:g}, not {self.ratio:g}."
            )

    @property
    def for_unet(self) -> bool:
        """Whether the method runs on UNet models (SD 1.x, 2.x, XL), not transformers."""
        return self.method in UNET_METHODS

    def values(self) -> dict[str, Any]:
        """The method's own parameters that are set, by name."""
        named = {name: getattr(self, name) for name in PARAMETERS[self.method]}
        return {name: value for name, value in named.items() if value is not None}

    def describe(self) -> str:
        """The mode in words: ``deep-cache, interval 3, branch 0``."""
        parts = [self.method] + [f"{name} {value:g}" for name, value in self.values().items()]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> FastMode:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        if not isinstance(data, dict):
            raise InvalidRequest("The fast mode settings must be a JSON object.")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as error:
            raise InvalidRequest(f"Unusable fast mode settings: {error}.") from None


def parse_fast_mode(text: str) -> FastMode | None:
    """A fast mode from its short form, ``method[,name=value...]``:
    ``deep-cache,interval=3``, ``first-block-cache,threshold=0.1``,
    ``token-merging,ratio=0.4``, ``taylorseer-cache,interval=3,warmup=3,order=1``;
    ``""`` or ``off`` gives ``None``. DeepCache takes
    ``layer=0`` (cache inside the blocks) or ``layer=block`` (whole blocks); without it,
    :data:`DEFAULT_LAYER`."""
    parts = [part.strip() for part in text.split(",")]
    method = parts[0].lower() if parts else ""
    if method in ("", "off", "none"):
        return None
    values: dict[str, Any] = {"layer": DEFAULT_LAYER} if method == DEEP_CACHE else {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if not equals or method not in PARAMETERS or name not in PARAMETERS[method]:
            known = ", ".join(PARAMETERS.get(method, ())) or "none"
            raise InvalidRequest(
                f"Fast mode parameter {_shown(part)} is not one of {method}'s ({known}); "
                "write them as name=value."
            )
        if name == "layer" and value.strip().lower() == WHOLE_BLOCK:
            values[name] = None
            continue
        try:
            whole = name in ("interval", "branch", "layer", "warmup", "order")
            values[name] = int(value) if whole else float(value)
        except ValueError:
            raise InvalidRequest(f"Fast {name} {_shown(value.strip())} is not a number.") from None
    return FastMode(method, **values)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
