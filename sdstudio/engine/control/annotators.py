"""Where the annotator networks' weights are, and which file each preprocessor needs.

Preprocessors such as depth estimation run a network of their own, the "annotator",
whose weights the user already has if they used another tool: A1111's ControlNet
extension keeps them in ``extensions/sd-webui-controlnet/annotator/downloads/<module>/``,
Forge in ``models/ControlNetPreprocessor/<module>/``, ComfyUI's controlnet_aux in
``custom_nodes/comfyui_controlnet_aux/ckpts/<Hugging Face repo>/``. sdstudio's own
folder is ``annotators`` in its models folder, where the model manager downloads
Hugging Face folders (in the Hub's cache layout).

:class:`Annotators` is what the engine is given: the folders to search (read again each
time, so a folder added in the settings counts at once) and the last network loaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdstudio.engine.paths import AppPaths
    from sdstudio.engine.settings import Settings

FOLDER_NAME = "annotators"
"""sdstudio's folder of annotator weights, in its models folder (and in a plain model
folder the user added)."""

A1111_FOLDER = "extensions/sd-webui-controlnet/annotator/downloads"
FORGE_FOLDER = "models/ControlNetPreprocessor"
COMFYUI_FOLDER = "custom_nodes/comfyui_controlnet_aux/ckpts"

SEARCH_DEPTH = 5
"""How deep a file is looked for under an annotator folder: ComfyUI's
``ckpts/LiheYoung/Depth-Anything/checkpoints/depth_anything_vitl14.pth`` is 4 levels
down, a Hub snapshot (``models--org--name/snapshots/<commit>/config.json``) 3."""

MAX_SEARCHED = 20_000
"""The most entries read under one folder (a folder of photos added by mistake must not
hang the search)."""


@dataclass(frozen=True, slots=True)
class WeightFiles:
    """What a module's annotator needs, as A1111 names it: its folder under
    ``annotator/downloads`` and its files (the first is the main one)."""

    folder: str
    files: tuple[str, ...]
    runs: bool = False
    """Whether sdstudio runs this annotator."""

    def described(self) -> str:
        """``openpose/body_pose_model.pth`` (and the others), for messages."""
        return ", ".join(f"{self.folder}/{name}" for name in self.files)


_OPENPOSE = WeightFiles("openpose", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"))
_DWPOSE = WeightFiles("openpose", ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"))
_ANIMAL = WeightFiles(
    "openpose",
    ("yolox_l.onnx", "rtmpose-m_simcc-ap10k_pt-aic-coco_210e-256x256-7a041aa1_20230206.onnx"),
)
_DENSEPOSE = WeightFiles("densepose", ("densepose_r50_fpn_dl.torchscript",))
_MIDAS = WeightFiles("midas", ("dpt_hybrid-midas-501f0c75.pt",))
_LERES = WeightFiles("leres", ("res101.pth",))
_LERES_PLUS = WeightFiles("leres", ("res101.pth", "latest_net_G.pth"))
_HAND = WeightFiles(
    "hand_refiner", ("graphormer_hand_state_dict.bin", "hrnetv2_w64_imagenet_pretrained.pth")
)
_LINEART = WeightFiles("lineart", ("sk_model.pth",), runs=True)
_HED = WeightFiles("hed", ("ControlNetHED.pth",), runs=True)
_PIDINET = WeightFiles("pidinet", ("table5_pidinet.pth",))
_ONEFORMER_ADE = WeightFiles("oneformer", ("250_16_swin_l_oneformer_ade20k_160k.pth",))
_ONEFORMER_COCO = WeightFiles("oneformer", ("150_16_swin_l_oneformer_coco_100ep.pth",))
_UNIFORMER = WeightFiles("uniformer", ("upernet_global_small.pth",))
_ANIME_FACE = WeightFiles("anime_face_segment", ("UNet.pth",))

DEPTH_ANYTHING = WeightFiles("depth_anything", ("depth_anything_vitl14.pth",), runs=True)
DEPTH_ANYTHING_V2 = WeightFiles(
    "depth_anything_v2", ("depth_anything_v2_vitl.safetensors",), runs=True
)

WEIGHTS: dict[str, WeightFiles] = {
    "depth_anything": DEPTH_ANYTHING,
    "depth_anything_v2": DEPTH_ANYTHING_V2,
    "openpose": WeightFiles("openpose", ("body_pose_model.pth",), runs=True),
    "openpose_face": _OPENPOSE,
    "openpose_faceonly": _OPENPOSE,
    "openpose_full": _OPENPOSE,
    "openpose_hand": _OPENPOSE,
    "dw_openpose_full": _DWPOSE,
    "animal_openpose": _ANIMAL,
    "densepose": _DENSEPOSE,
    "densepose_parula": _DENSEPOSE,
    "depth": _MIDAS,
    "depth_midas": _MIDAS,
    "normal_map": _MIDAS,
    "normal_midas": _MIDAS,
    "depth_leres": _LERES,
    "depth_leres++": _LERES_PLUS,
    "depth_zoe": WeightFiles("zoedepth", ("ZoeD_M12_N.pt",)),
    "depth_hand_refiner": _HAND,
    "lineart": _LINEART,
    "lineart_realistic": _LINEART,
    "lineart_coarse": WeightFiles("lineart", ("sk_model2.pth",), runs=True),
    "lineart_anime": WeightFiles("lineart_anime", ("netG.pth",)),
    "lineart_anime_denoise": WeightFiles("manga_line", ("erika.pth",)),
    "mlsd": WeightFiles("mlsd", ("mlsd_large_512_fp32.pth",)),
    "normal_bae": WeightFiles("normal_bae", ("scannet.pt",)),
    "normal_dsine": WeightFiles("normal_dsine", ("dsine.pt",)),
    "hed": _HED,
    "softedge_hed": _HED,
    "hed_safe": _HED,
    "softedge_hedsafe": _HED,
    "scribble_hed": _HED,
    "pidinet": _PIDINET,
    "softedge_pidinet": _PIDINET,
    "pidinet_safe": _PIDINET,
    "softedge_pidisafe": _PIDINET,
    "pidinet_scribble": _PIDINET,
    "scribble_pidinet": _PIDINET,
    "pidinet_sketch": _PIDINET,
    "t2ia_sketch_pidi": _PIDINET,
    "softedge_teed": WeightFiles("TEED", ("7_model.pth",)),
    "softedge_anyline": WeightFiles("TEED", ("MTEED.pth",)),
    "oneformer_ade20k": _ONEFORMER_ADE,
    "seg_ofade20k": _ONEFORMER_ADE,
    "oneformer_coco": _ONEFORMER_COCO,
    "seg_ofcoco": _ONEFORMER_COCO,
    "segmentation": _UNIFORMER,
    "seg_ufade20k": _UNIFORMER,
    "anime_face_segment": _ANIME_FACE,
    "seg_anime_face": _ANIME_FACE,
    "inpaint_only+lama": WeightFiles("lama", ("ControlNetLama.pth",)),
    "mobile_sam": WeightFiles("mobile_sam", ("mobile_sam.pt",)),
    "instant_id_face_keypoints": WeightFiles("insightface", ("models/antelopev2",)),
}
"""The annotator files of A1111's modules that run a network, by module name."""


def weights_message(name: str, label: str) -> str:
    """Why the module ``name`` (asked for as ``label``) is refused: the annotator file it
    needs and where the other tools keep it (sdstudio does not run its network)."""
    needed = WEIGHTS.get(name)
    where = (
        f"A1111 keeps annotator weights in {A1111_FOLDER}/, Forge in {FORGE_FOLDER}/, "
        f"ComfyUI in {COMFYUI_FOLDER}/"
    )
    files = f"{needed.described()}; {where}" if needed else where
    return (
        f"The preprocessor {label!r} runs an annotator network that needs its own weights "
        f"({files}); sdstudio does not run it yet. Make the control map with A1111, Forge "
        f"or ComfyUI and use it with preprocessor 'none' ({', '.join(_runs())} run here)."
    )


def _runs() -> list[str]:
    return [name for name, files in WEIGHTS.items() if files.runs]


def annotator_folders(paths: AppPaths, settings: Settings) -> list[Path]:
    """The folders where annotator weights are looked for, in this order: sdstudio's
    ``models/annotators``, then for each model folder of the settings its tool's
    annotator folders (A1111's and Forge's, ComfyUI's) or, for a plain folder, its
    ``annotators`` sub-folder and the folder itself. Folders that do not exist are
    left out."""
    from sdstudio.engine.models import layouts

    found = [paths.models_dir / FOLDER_NAME]
    for folder in settings.model_folders:
        root = Path(folder).expanduser()
        tool = layouts.detect_tool(root)
        if tool == "a1111":
            found += [root / A1111_FOLDER, root / FORGE_FOLDER]
        elif tool == "comfyui":
            found.append(root / COMFYUI_FOLDER)
        elif tool is None:
            found += [root / FOLDER_NAME, root]
    return [folder for folder in dict.fromkeys(found) if _is_dir(folder)]


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


class Annotators:
    """The annotator folders and the last annotator network loaded (one at a time: they
    are loaded for a map and kept for the next one of the same module)."""

    def __init__(self, folders: Callable[[], Iterable[Path]] | Iterable[Path] | None = None):
        """``folders``: the folders to search, or a function giving them (called on each
        search); without them nothing is found."""
        self._folders = folders
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self.device = "cpu"
        """Where the networks run (``cuda`` runs them on the GPU, beside the model)."""

    def folders(self) -> list[Path]:
        """The folders searched, in order."""
        given = self._folders() if callable(self._folders) else self._folders
        return [Path(folder) for folder in given or ()]

    def find(self, matches: Callable[[Path], int | None]) -> Path | None:
        """The best file or folder under the annotator folders: ``matches`` gives an
        entry's rank (lower is better) or None; the first folder with any match wins."""
        for folder in self.folders():
            best: tuple[int, str, Path] | None = None
            for path in walk(folder):
                rank = matches(path)
                if rank is not None and (best is None or (rank, str(path)) < best[:2]):
                    best = (rank, str(path), path)
            if best is not None:
                return best[2]
        return None

    def cached(self, key: Any, load: Callable[[], Any]) -> Any:
        """The network loaded for ``key`` (a file and its settings), loading it with
        ``load`` in place of the one loaded before."""
        with self._lock:
            if self._loaded is not None and self._loaded[0] == key:
                return self._loaded[1]
            self._loaded = None  # free the previous one before loading
            network = load()
            self._loaded = (key, network)
            return network

    def forget(self) -> None:
        """Free the loaded network."""
        with self._lock:
            self._loaded = None


def walk(folder: Path, depth: int = SEARCH_DEPTH) -> Iterator[Path]:
    """The files and folders under ``folder``, ``depth`` levels down at most, without
    hidden ones, :data:`MAX_SEARCHED` at most."""
    seen = 0
    pending = [(folder, 0)]
    while pending:
        current, level = pending.pop()
        try:
            with os.scandir(current) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in listed:
            if entry.name.startswith("."):
                continue
            seen += 1
            if seen > MAX_SEARCHED:
                return
            path = Path(entry.path)
            yield path
            try:
                is_folder = entry.is_dir()
            except OSError:
                continue
            if is_folder and level + 1 < depth:
                pending.append((path, level + 1))
