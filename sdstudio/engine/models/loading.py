"""Loading single-file checkpoints offline, and pickles only through a restricted loader.

A checkpoint's family (see :mod:`sdstudio.engine.models.families`) picks one of the
diffusers config folders shipped in ``resources/model_configs/`` (configs and tokenizer
files, no weights), so ``from_single_file`` never needs the Hugging Face hub. Inpainting
and v-prediction variants are the same folders with ``in_channels`` or
``prediction_type`` changed, written to a temporary copy for the load.

A checkpoint that does not fit the configs (a pruned, distilled or custom model, missing
parts) is refused with what its header shows (its widths against the family's, the parts
it lacks) and what to do, instead of the loader's advice to load random weights.

``.ckpt``/``.pt``/``.pth``/``.bin`` files are Python pickles that can run code when
loaded: they are opened with ``torch.load(weights_only=True)``, which only rebuilds
tensors and plain containers, and a file that needs more is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models.families import (
    LOADABLE_FAMILIES,
    Family,
    ModelInfo,
    Shapes,
    Widths,
    checkpoint_widths,
    describe_checkpoint,
    detect_family_from_header,
    detect_folder_family,
    read_safetensors_shapes,
    width_differences,
    with_sidecar_prediction,
)
from sdstudio.resource_files import resource_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED = "SD 1.x, SD 2.x and SDXL (and their inpainting versions)"
CONFIG_ADVICE = (
    "To load it, give a diffusers folder of a model with the same architecture as its "
    "config (sdstudio-cli generate --config DIR)."
)


def configs_root() -> Path:
    """The folder of shipped diffusers configs, one sub-folder per family."""
    return resource_path("model_configs")


def inspect_checkpoint(path: Path) -> ModelInfo:
    """The family of a single-file checkpoint (safetensors or restricted pickle)."""
    return with_sidecar_prediction(detect_family_from_header(checkpoint_shapes(path)), path)


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a checkpoint (safetensors, or a restricted pickle)."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        state = load_pickle_state_dict(path)
        return {key: tuple(value.shape) for key, value in state.items()}
    if suffix != ".safetensors":
        raise ModelError(
            f"{path.name} is not a model: give a diffusers folder, a .safetensors file "
            "or a .ckpt checkpoint."
        )
    return read_safetensors_shapes(path)


def load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a pickle checkpoint, read with ``weights_only=True`` (memory-mapped).

    Raises :class:`ModelError` when the pickle holds anything but tensors and plain data
    (it could run code) or cannot be read.
    """
    import torch

    data = load_pickle_data(path)
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} is a pickle checkpoint without a state dict of weights.")
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def load_pickle_data(path: Path) -> Any:
    """Everything a pickle file holds, as :func:`load_pickle_state_dict` reads it: tensors
    and plain containers (dicts with any keys, lists, tuples, strings, numbers) only.

    For files whose layout is more than a flat state dict (an AUTOMATIC1111
    hypernetwork keys its layers by width). Raises :class:`ModelError` as
    :func:`load_pickle_state_dict` does.
    """
    import pickle

    import torch

    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Legacy (non-zip) torch.save files cannot be memory-mapped.
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses any global that is not a tensor or plain data (os.system,
        # arbitrary classes), and garbage; nothing in the file has run.
        raise pickle_refusal(path) from None
    except (OSError, EOFError, RuntimeError, ValueError):
        raise _unreadable_pickle(path) from None
    return data


def pickle_refusal(path: Path) -> ModelError:
    """The error for a pickle file the restricted loader refused (it holds code)."""
    return ModelError(
        f"{path.name} was not opened: it is a pickle checkpoint, which can run code when "
        "loaded, and it holds code or other objects besides weights (or is damaged). Convert "
        "it to .safetensors with a tool you trust, or get a .safetensors version of it."
    )


def refused_pickle(error: BaseException) -> bool:
    """Whether ``error``, or an error it came from, is ``torch.load(weights_only=True)``
    refusing a pickle (libraries such as diffusers wrap it in their own errors)."""
    import pickle

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, pickle.UnpicklingError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _unreadable_pickle(path: Path) -> ModelError:
    return ModelError(
        f"{path.name} is a pickle checkpoint that could not be read: it is truncated or damaged."
    )


def load_single_file(path: Path, *, dtype: torch.dtype, config: Path | None = None) -> Any:
    """Load a single-file checkpoint as a diffusers pipeline, offline.

    ``config`` is a diffusers folder of the checkpoint's family to take configs from;
    without it the family is detected and the shipped configs are used.
    """
    info = inspect_checkpoint(path)
    if config is not None:
        if not (config / "model_index.json").is_file():
            raise ModelError(f"The config folder {config} has no model_index.json.")
        folder_info = detect_folder_family(config)
        with _explaining_mismatches(path, config):
            return _from_single_file(path, config, folder_info, dtype, tokenizers={})
    if info.family not in LOADABLE_FAMILIES:
        raise ModelError(unknown_checkpoint_message(path, checkpoint_shapes(path), info))
    with tempfile.TemporaryDirectory(prefix="sdstudio-config-") as tmp:
        folder = config_folder(info, Path(tmp))
        with _explaining_mismatches(path, folder, family=info.label):
            pipe = _from_single_file(path, folder, info, dtype, tokenizers=shipped_tokenizers(info))
    sd2_unknown = info.family is Family.SD2 and info.prediction_type is None
    if sd2_unknown and not info.inpainting and predicts_v(pipe.unet):
        use_v_prediction(pipe)
    return pipe


def unknown_checkpoint_message(path: Path, shapes: Shapes, info: ModelInfo) -> str:
    """Why a checkpoint of no loadable family is refused, what it looks like, what to do."""
    if info.family is not Family.UNKNOWN:
        return (
            f"{path.name} is an {info.label} checkpoint, which sdstudio cannot load yet; "
            f"supported: {SUPPORTED}."
        )
    look = describe_checkpoint(shapes, path.stem)
    advice = f" {CONFIG_ADVICE}" if checkpoint_widths(shapes).unet_channels else ""
    return (
        f"{path.name} is not a Stable Diffusion checkpoint sdstudio knows: {look}. "
        f"Supported: {SUPPORTED}.{advice}"
    )


def mismatch_message(
    path: Path, shapes: Shapes, config: Path, *, family: str = "", detail: str = ""
) -> str:
    """Why a checkpoint does not fit the config folder ``config``, and what to do.

    ``family`` is the family's name when ``config`` is sdstudio's own folder for it.
    ``detail`` is the loader's own account, used when the sizes compared here all fit.
    """
    name = family or f"the config folder {config.name}"
    differences = width_differences(checkpoint_widths(shapes), folder_widths(config), name)
    if not differences:
        differences = [detail or "some of the weights it needs are missing or shaped otherwise"]
    if family:
        problem = f"looks like an {family} checkpoint but not in its sizes"
    else:
        problem = f"does not fit {name}"
    return f"{path.name} {problem}: {'; '.join(differences)}. {CONFIG_ADVICE}"


def folder_widths(folder: Path) -> Widths:
    """The :class:`Widths` a diffusers folder's configs give a model (empty where unreadable)."""

    def config(component: str) -> dict[str, Any]:
        try:
            data = json.loads((folder / component / "config.json").read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    unet = config("unet")
    channels = unet.get("block_out_channels") or [None]
    context = unet.get("cross_attention_dim")
    layers, down = unet.get("layers_per_block"), unet.get("down_block_types") or []
    text = [config(name).get("hidden_size") for name in ("text_encoder", "text_encoder_2")]
    return Widths(
        unet_channels=channels[0] if isinstance(channels[0], int) else None,
        context=context if isinstance(context, int) else None,
        input_blocks=len(down) * (layers + 1) if isinstance(layers, int) and down else 0,
        text=tuple(sorted(w for w in text if isinstance(w, int))),
        vae=bool(config("vae")),
    )


def predicts_v(unet: Any) -> bool:
    """Whether an SD 2.x UNet was trained for v-prediction (the 768 px models).

    Their files do not say so. AUTOMATIC1111's test: denoise a flat latent
    at the last timestep with a flat text context; a v-prediction model's
    output lies far below its input, an epsilon model's does not.
    """
    import torch

    options = {"device": unet.device, "dtype": unet.dtype}
    latent = torch.full((1, unet.config.in_channels, 8, 8), 0.5, **options)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, **options)
    with torch.no_grad():
        out = unet(latent, torch.tensor([999], device=unet.device), context).sample
    return bool((out.float() - latent.float()).mean().item() < -1)


def use_v_prediction(pipe: Any) -> None:
    """Switch a loaded SD 2.x pipeline to v-prediction, as its 768-v config would have it."""
    from diffusers.models.attention_processor import Attention

    pipe.scheduler = pipe.scheduler.__class__.from_config(
        pipe.scheduler.config, prediction_type="v_prediction"
    )
    pipe.unet.register_to_config(upcast_attention=True, sample_size=96)
    for module in pipe.unet.modules():
        if isinstance(module, Attention):
            module.upcast_attention = True


def config_folder(info: ModelInfo, scratch: Path) -> Path:
    """The shipped config folder for ``info``, or a patched copy of it under ``scratch``."""
    source = configs_root() / info.family.value
    v_prediction = info.prediction_type == "v_prediction"
    if not info.inpainting and not v_prediction:
        return source
    folder = scratch / info.family.value
    shutil.copytree(source, folder)
    unet: dict[str, Any] = {"in_channels": 9} if info.inpainting else {}
    if v_prediction:
        _patch(folder / "scheduler" / "scheduler_config.json", prediction_type="v_prediction")
        if info.family is Family.SD2:  # the SD 2.x 768-v models
            unet.update(sample_size=96, upcast_attention=True)
    if unet:
        _patch(folder / "unet" / "config.json", **unet)
    return folder


def shipped_tokenizers(info: ModelInfo) -> dict[str, Any]:
    """The family's CLIP tokenizers, from the one shared vocabulary."""
    from transformers import CLIPTokenizer

    vocab = configs_root() / "clip_tokenizer"
    if info.family is Family.SD1:
        return {"tokenizer": CLIPTokenizer.from_pretrained(vocab)}
    open_clip = CLIPTokenizer.from_pretrained(vocab, pad_token="!")
    if info.family is Family.SD2:
        return {"tokenizer": open_clip}
    if info.family is Family.SDXL_REFINER:  # the refiner has only SDXL's second encoder
        return {"tokenizer_2": open_clip}
    return {"tokenizer": CLIPTokenizer.from_pretrained(vocab), "tokenizer_2": open_clip}


def pipeline_class(info: ModelInfo) -> Any:
    """The diffusers pipeline class for a model family."""
    import diffusers

    if info.family is Family.SDXL_REFINER:  # it only ever finishes other images
        name = "StableDiffusionXLImg2ImgPipeline"
    elif info.family is Family.SDXL:
        name = (
            "StableDiffusionXLInpaintPipeline" if info.inpainting else "StableDiffusionXLPipeline"
        )
    else:
        name = "StableDiffusionInpaintPipeline" if info.inpainting else "StableDiffusionPipeline"
    return getattr(diffusers, name)


def _from_single_file(
    path: Path, config: Path, info: ModelInfo, dtype: Any, *, tokenizers: dict[str, Any]
) -> Any:
    options: dict[str, Any] = {"config": str(config), "dtype": dtype, "local_files_only": True}
    if info.family not in (Family.SDXL, Family.SDXL_REFINER):
        options.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipeline_class(info).from_single_file(str(path), **options, **tokenizers)


@contextlib.contextmanager
def _explaining_mismatches(path: Path, config: Path, *, family: str = "") -> Iterator[None]:
    """Turn a load's complaint that the weights do not fit ``config`` into a :class:`ModelError`
    that says how they differ and what to do."""
    try:
        yield
    except Exception as error:
        if not _is_mismatch(error):
            raise
        # diffusers' own text asks for options (low_cpu_mem_usage, ignore_mismatched_sizes)
        # that would leave random weights; the checkpoint's header says what does not fit.
        log.warning("Loading %s with the configs of %s failed: %s", path, config, error)
        shapes = checkpoint_shapes(path)
        detail = _shape_detail(str(error))
        message = mismatch_message(path, shapes, config, family=family, detail=detail)
        raise ModelError(message) from None


def _shape_detail(text: str) -> str:
    """``"its X is [77, 32] where the config has [77, 768]"`` from a diffusers shape error."""
    match = re.search(
        r"(\S+) expected shape torch\.Size\((\[[^\]]*\])\), but got torch\.Size\((\[[^\]]*\])\)",
        text,
    )
    if match is None:
        return ""
    return f"its {match[1]} is {match[3]} where the config has {match[2]}"


def _is_mismatch(error: Exception) -> bool:
    """Whether a ``from_single_file`` error says the weights do not fit the configs."""
    if type(error).__name__ == "SingleFileComponentError":  # a component's weights are missing
        return True
    if isinstance(error, KeyError | IndexError | NotImplementedError):
        return True  # missing tensors: a key lookup, or a part left on the meta device
    text = str(error)
    return isinstance(error, ValueError | RuntimeError) and (
        "shape" in text or "size mismatch" in text or "missing" in text.lower()
    )


def _patch(config_file: Path, **values: Any) -> None:
    data = json.loads(config_file.read_text("utf-8"))
    data.update(values)
    config_file.write_text(json.dumps(data, indent=2), "utf-8")
