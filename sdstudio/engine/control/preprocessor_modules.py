"""The preprocessor modules of A1111's ControlNet extension, by name, and what each needs.

The modules are the extension's, under its names (its labels, such as
``"invert (from white bg & black line)"``, and its internal names are both accepted,
see :func:`module_name`), with its defaults and ranges for the two settings
``threshold_a`` and ``threshold_b``; ComfyUI's node names of the same preprocessors
are accepted too. sdstudio runs the modules that need no annotator weights (see
:data:`BUILT_IN`) and, with an annotator network's weights, those of
:data:`WITH_WEIGHTS`; :data:`NEEDS_WEIGHTS` and :data:`NOT_A_MAP` name the modules it
does not run. Running them is :mod:`~sdstudio.engine.control.preprocessors`'s.
"""

from __future__ import annotations

from dataclasses import dataclass


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
"""Modules whose map marks the pixels to repaint (see
:func:`~sdstudio.engine.control.preprocessors.inpaint_control`)."""

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
