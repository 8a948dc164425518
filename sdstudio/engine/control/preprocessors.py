"""Turning a control image into the control map a ControlNet reads.

The modules are A1111's ControlNet extension's, under its names (its labels, such as
``"invert (from white bg & black line)"``, and its internal names are both accepted),
with its defaults for the two settings ``threshold_a`` and ``threshold_b``; ComfyUI's
node names of the same preprocessors are accepted too. sdstudio runs the modules that
need no annotator weights (see :data:`BUILT_IN`) and, with the weights found by an
:class:`~sdstudio.engine.control.annotators.Annotators`, Depth Anything (V1 and V2), HED,
line art (realistic and coarse) and OpenPose's body (see :data:`WITH_WEIGHTS` and
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

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdstudio.engine.control.map_fit import fit_map, fit_mask
from sdstudio.engine.errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from sdstudio.engine.control.annotators import Annotators
    from sdstudio.engine.control.units import ControlUnit

MAX_WORKING_PIXELS = 4096 * 4096
"""The largest image a preprocessor works on (an extreme aspect ratio at a large
resolution would otherwise ask for gigabytes)."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One of a module's two settings, with A1111's slider label, default and range."""

    label: str
    default: float
    minimum: float
    maximum: float


@dataclass(frozen=True, slots=True)
class Module:
    """A built-in module: its settings and whether it works at the unit's resolution."""

    a: Setting | None = None
    b: Setting | None = None
    at_resolution: bool = True


INPAINT_MODULES = frozenset({"inpaint", "inpaint_only"})
"""Modules whose map marks the pixels to repaint (see :func:`inpaint_control`)."""

_GAMMA = Setting("gamma correction", 1.0, 0.1, 2.0)

MODULES: dict[str, Module] = {
    "none": Module(at_resolution=False),
    "canny": Module(Setting("low threshold", 100, 1, 255), Setting("high threshold", 200, 1, 255)),
    "invert": Module(at_resolution=False),
    "lineart_standard": Module(),
    "scribble_xdog": Module(Setting("XDoG threshold", 32, 1, 64)),
    "threshold": Module(Setting("binarization threshold", 127, 0, 255)),
    "tile_resample": Module(Setting("down sampling rate", 1.0, 1.0, 8.0), at_resolution=False),
    "blur_gaussian": Module(Setting("sigma", 9.0, 0.01, 64.0)),
    "recolor_luminance": Module(_GAMMA, at_resolution=False),
    "recolor_intensity": Module(_GAMMA, at_resolution=False),
    "shuffle": Module(),
    "inpaint": Module(at_resolution=False),
    "inpaint_only": Module(at_resolution=False),
}
"""The modules sdstudio runs, by A1111 name."""

BUILT_IN = tuple(MODULES)

WITH_WEIGHTS: dict[str, Module] = {
    "depth_anything": Module(),
    "depth_anything_v2": Module(),
    "softedge_hed": Module(),
    "softedge_hedsafe": Module(),
    "scribble_hed": Module(),
    "lineart_realistic": Module(),
    "lineart_coarse": Module(),
    "openpose": Module(),
}
"""The modules sdstudio runs with an annotator network's weights (found by
:class:`~sdstudio.engine.control.annotators.Annotators`)."""

AVAILABLE = (*BUILT_IN, *WITH_WEIGHTS)
"""Every module sdstudio runs, by A1111 name."""

ALIASES = {
    "invert (from white bg & black line)": "invert",
    "lineart_standard (from white bg & black line)": "lineart_standard",
    "inpaint_global_harmonious": "inpaint",
    "hed": "softedge_hed",
    "hed_safe": "softedge_hedsafe",
    "lineart": "lineart_realistic",
    "depthanythingpreprocessor": "depth_anything",
    "depthanythingv2preprocessor": "depth_anything_v2",
    "dwpreprocessor": "dw_openpose_full",
    "dw_openpose": "dw_openpose_full",
    "openposepreprocessor": "openpose_full",
    "animalposepreprocessor": "animal_openpose",
    "denseposepreprocessor": "densepose",
    "lineartpreprocessor": "lineart_realistic",
    "animelineartpreprocessor": "lineart_anime",
    "manga2anime_lineart_preprocessor": "lineart_anime_denoise",
    "hedpreprocessor": "softedge_hed",
    "pidinetpreprocessor": "softedge_pidinet",
    "teedpreprocessor": "softedge_teed",
    "anylineartpreprocessor_aux": "softedge_anyline",
    "m-lsdpreprocessor": "mlsd",
    "bae-normalmappreprocessor": "normal_bae",
    "dsine-normalmappreprocessor": "normal_dsine",
    "midas-depthmappreprocessor": "depth_midas",
    "midas-normalmappreprocessor": "normal_midas",
    "zoe-depthmappreprocessor": "depth_zoe",
    "leres-depthmappreprocessor": "depth_leres",
    "meshgraphormer-depthmappreprocessor": "depth_hand_refiner",
    "oneformer-ade20k-semsegpreprocessor": "seg_ofade20k",
    "oneformer-coco-semsegpreprocessor": "seg_ofcoco",
    "uniformer-semsegpreprocessor": "seg_ufade20k",
    "semsegpreprocessor": "seg_ufade20k",
    "animeface_semsegpreprocessor": "seg_anime_face",
    "mediapipe-facemeshpreprocessor": "mediapipe_face",
}
"""A1111's labels of modules whose internal name differs, and ComfyUI's (controlnet_aux)
node names of A1111's modules (names are compared without case)."""

NEEDS_WEIGHTS = frozenset(
    [
        "animal_openpose",
        "densepose",
        "densepose_parula",
        "depth",
        "depth_anything",
        "depth_anything_v2",
        "depth_hand_refiner",
        "depth_leres",
        "depth_leres++",
        "depth_midas",
        "depth_zoe",
        "dw_openpose_full",
        "instant_id_face_keypoints",
        "lineart",
        "lineart_anime",
        "lineart_anime_denoise",
        "lineart_coarse",
        "lineart_realistic",
        "mediapipe_face",
        "mlsd",
        "normal_bae",
        "normal_dsine",
        "normal_map",
        "normal_midas",
        "openpose",
        "openpose_face",
        "openpose_faceonly",
        "openpose_full",
        "openpose_hand",
        "scribble_hed",
        "pidinet_scribble",
        "scribble_pidinet",
        "anime_face_segment",
        "seg_anime_face",
        "oneformer_ade20k",
        "seg_ofade20k",
        "oneformer_coco",
        "seg_ofcoco",
        "segmentation",
        "seg_ufade20k",
        "hed",
        "softedge_hed",
        "hed_safe",
        "softedge_hedsafe",
        "pidinet",
        "softedge_pidinet",
        "pidinet_safe",
        "softedge_pidisafe",
        "softedge_teed",
        "softedge_anyline",
        "color",
        "t2ia_color_grid",
        "pidinet_sketch",
        "t2ia_sketch_pidi",
        "inpaint_only+lama",
        "mobile_sam",
    ]
)
"""A1111's modules (names and labels) that run an annotator network."""

NOT_A_MAP = frozenset(
    [
        "reference_only",
        "reference_adain",
        "reference_adain+attn",
        "tile_colorfix",
        "tile_colorfix+sharp",
        "clip_vision",
        "t2ia_style_clipvision",
        "revision_clipvision",
        "revision_ignore_prompt",
        "ip-adapter_clip_sd15",
        "ip-adapter_clip_h",
        "ip-adapter_clip_sdxl",
        "ip-adapter_clip_g",
        "ip-adapter_clip_sdxl_plus_vith",
        "ip-adapter_face_id",
        "ip-adapter_face_id_plus",
        "ip-adapter_pulid",
        "ip-adapter-auto",
        "instant_id_face_embedding",
    ]
)
"""A1111's modules that act inside the model's layers rather than through a map."""


def module_name(preprocessor: str) -> str:
    """The module's A1111 name for a name or label as given (case and surrounding spaces
    ignored)."""
    name = preprocessor.strip().casefold()
    return ALIASES.get(name, name)


SEEDED_MODULES = frozenset({"shuffle"})
"""Modules whose map depends on the seed (each image of a batch gets its own)."""


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
