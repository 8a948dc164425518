"""Turning a control image into the control map a ControlNet reads.

The modules, their names and settings are in
:mod:`~sdstudio.engine.control.preprocessor_modules`. sdstudio runs the built-in ones
and, with the weights found by an
:class:`~sdstudio.engine.control.annotators.Annotators`, Depth Anything (V1 and V2), HED,
line art (realistic and coarse) and OpenPose's body (see
:mod:`~sdstudio.engine.control.annotator_files`); another module that needs weights
(hands and faces, MiDaS...) is refused by :func:`check_preprocessor` with a message
naming the file it needs.

A map is made as A1111 makes it: the image is scaled so that its short side is the
unit's ``resolution`` (A1111's "Processor Res", or with Pixel Perfect the size the
image takes in the generation, see :mod:`~sdstudio.engine.control.pixel_perfect`;
modules that do not look at neighbouring pixels skip this), filtered, then fitted to
the generation's size with the unit's resize mode (see
:mod:`sdstudio.engine.control.map_fit`).

Inpainting ControlNets read the image with the pixels to repaint marked as -1, which
no RGB image can hold: :func:`inpaint_control` gives that float array, and
:func:`control_map` gives a preview of it (the pixels to repaint black).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdstudio.engine.control.map_fit import fit_map, fit_mask
from sdstudio.engine.control.preprocessor_modules import (
    BUILT_IN,
    INPAINT_MODULES,
    MODULES,
    NEEDS_WEIGHTS,
    NOT_A_MAP,
    SEEDED_MODULES,
    WITH_WEIGHTS,
    Module,
    module_name,
)
from sdstudio.engine.errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from sdstudio.engine.control.annotators import Annotators
    from sdstudio.engine.control.units import ControlUnit

MAX_WORKING_PIXELS = 4096 * 4096
"""The largest image a preprocessor works on (an extreme aspect ratio at a large
resolution would otherwise ask for gigabytes)."""


def draws_at_random(unit: ControlUnit) -> bool:
    """Whether the unit's map depends on the image's seed."""
    return module_name(unit.preprocessor) in SEEDED_MODULES


def needs_mask(unit: ControlUnit) -> bool:
    """Whether the unit's map marks pixels to repaint (an inpainting ControlNet)."""
    return module_name(unit.preprocessor) in INPAINT_MODULES


def check_preprocessor(unit: ControlUnit, annotators: Annotators | None = None) -> None:
    """Refuse a module sdstudio cannot run, or settings outside its range.

    Raises :class:`ModelError` for a module whose annotator network sdstudio does not
    run (the message names the file it needs) or that works inside the model, and, where
    ``annotators`` are given, for a module whose weights are not in their folders;
    :class:`InvalidRequest` for an unknown module or a setting out of range. Settings a
    module does not have are ignored (A1111 records them anyway).
    """
    from sdstudio.engine.control.annotators import weights_message

    name = module_name(unit.preprocessor)
    if name in WITH_WEIGHTS:
        if annotators is not None:
            from sdstudio.engine.control.annotator_files import find_weights

            find_weights(name, annotators)
        return
    if name in NEEDS_WEIGHTS:
        raise ModelError(weights_message(name, unit.preprocessor))
    if name in NOT_A_MAP:
        raise ModelError(
            f"The preprocessor {unit.preprocessor!r} works inside the model rather than "
            "through a control map; sdstudio does not run it yet."
        )
    module = MODULES.get(name)
    if module is None:
        raise InvalidRequest(
            f"The preprocessor {unit.preprocessor!r:.60} is unknown; the built-in ones are "
            f"{', '.join(BUILT_IN)}, and with annotator weights {', '.join(WITH_WEIGHTS)}."
        )
    for setting, value, which in (
        (module.a, unit.threshold_a, "a"),
        (module.b, unit.threshold_b, "b"),
    ):
        if setting is None or value is None:
            continue
        if not setting.minimum <= value <= setting.maximum:
            raise InvalidRequest(
                f"The {name} preprocessor's {setting.label} (threshold {which}) is "
                f"{value:g}; it must be from {setting.minimum:g} to {setting.maximum:g}."
            )


def settings_of(unit: ControlUnit) -> tuple[float, float]:
    """The unit's two settings, each module default where not given (0 where none)."""
    module = _module(unit)
    a = unit.threshold_a if unit.threshold_a is not None else module.a.default if module.a else 0.0
    b = unit.threshold_b if unit.threshold_b is not None else module.b.default if module.b else 0.0
    return float(a), float(b)


def _module(unit: ControlUnit) -> Module:
    name = module_name(unit.preprocessor)
    return MODULES.get(name) or WITH_WEIGHTS[name]


def processor_resolution(
    image_size: tuple[int, int], unit: ControlUnit, target: tuple[int, int] | None
) -> int:
    """The short side the module works at: with Pixel Perfect (and the generation's
    size ``target`` known) the image's short side as it is placed in the generation,
    else the unit's resolution."""
    if unit.pixel_perfect and target is not None:
        from sdstudio.engine.control.pixel_perfect import pixel_perfect_resolution

        return pixel_perfect_resolution(image_size, target, unit.resize)
    return unit.resolution


def working_size(
    image_size: tuple[int, int], unit: ControlUnit, resolution: int | None = None
) -> tuple[int, int]:
    """The size the module works at: the image's short side scaled to ``resolution``
    (default: the unit's), or the image's own size for modules that do not use it."""
    width, height = image_size
    if not _module(unit).at_resolution:
        return width, height
    resolution = unit.resolution if resolution is None else resolution
    scale = resolution / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size[0] * size[1] > MAX_WORKING_PIXELS:
        raise InvalidRequest(
            f"A {width}x{height} control image at resolution {resolution} would be "
            f"{size[0]}x{size[1]} pixels, too large to preprocess; crop it or lower the "
            "resolution."
        )
    return size


def preprocess(
    image: Image.Image,
    unit: ControlUnit,
    *,
    seed: int = 0,
    resolution: int | None = None,
    annotators: Annotators | None = None,
) -> np.ndarray:
    """The module's map of ``image`` at its working size (RGB ``uint8``), not fitted;
    ``resolution`` replaces the unit's (Pixel Perfect), ``annotators`` find the weights
    of the modules that need some."""
    import numpy as np

    from sdstudio.engine.control.map_filters import FILTERS

    check_preprocessor(unit)
    name = module_name(unit.preprocessor)
    pixels = np.asarray(image.convert("RGB"))
    size = working_size(image.size, unit, resolution)
    if size != image.size:
        import cv2

        interpolation = cv2.INTER_CUBIC if size[0] > image.width else cv2.INTER_AREA
        pixels = cv2.resize(pixels, size, interpolation=interpolation)
    if name in WITH_WEIGHTS:
        from sdstudio.engine.control.annotator_files import annotator_map

        return annotator_map(pixels, name, annotators)
    work = FILTERS.get(name)
    if work is None:
        return np.ascontiguousarray(pixels)
    a, b = settings_of(unit)
    return np.ascontiguousarray(work(pixels, a, b, seed))


def control_map(
    image: Image.Image,
    unit: ControlUnit,
    size: tuple[int, int],
    *,
    mask: Image.Image | None = None,
    seed: int = 0,
    annotators: Annotators | None = None,
) -> Image.Image:
    """The unit's control map of ``image``, RGB at exactly ``size`` (width, height).

    ``seed`` draws the randomness of modules that have some (``shuffle``), so a re-run
    makes the same map; ``annotators`` find the weights of the modules that need some.
    With the unit's Pixel Perfect the module works at the size the image takes in
    ``size``. For the inpaint modules ``mask`` (white: repaint) is needed and
    the map is a preview: the image with the pixels to repaint black; the ControlNet
    itself reads :func:`inpaint_control`.
    """
    from PIL import Image

    if needs_mask(unit):
        import numpy as np

        pixels = inpaint_control(image, mask, unit, size)
        return Image.fromarray((pixels.clip(0, 1) * 255).round().astype(np.uint8))
    resolution = processor_resolution(image.size, unit, size)
    made = preprocess(image, unit, seed=seed, resolution=resolution, annotators=annotators)
    pixels = fit_map(made, size, unit.resize)
    return Image.fromarray(pixels)


def inpaint_control(
    image: Image.Image, mask: Image.Image | None, unit: ControlUnit, size: tuple[int, int]
) -> np.ndarray:
    """What an inpainting ControlNet reads: a float32 array of shape (height, width, 3)
    with the image in 0..1 and -1 in every channel of the pixels to repaint (diffusers'
    convention for ``ControlNetModel`` inpainting models; make it a tensor with
    ``torch.from_numpy(array.transpose(2, 0, 1))[None]``).

    ``mask`` (white: repaint) is fitted like the image; with the ``fill`` resize mode the
    added border is marked to repaint too, so that the model paints it in.
    """
    import numpy as np

    check_preprocessor(unit)
    if mask is None:
        raise InvalidRequest(
            f"The {module_name(unit.preprocessor)} preprocessor needs a mask of what to "
            "repaint (inpainting)."
        )
    pixels = fit_map(np.asarray(image.convert("RGB")), size, unit.resize)
    repaint = fit_mask(np.asarray(mask.convert("L")), size, unit.resize)
    result = pixels.astype(np.float32) / 255.0
    result[repaint] = -1.0
    return result
