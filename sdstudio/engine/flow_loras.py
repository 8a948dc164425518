"""LoRAs of the flow-matching families (Flux.1, SD 3.x, Z-Image, Qwen-Image, Flux.2):
which family a file is made for and in what layout, and loading it with diffusers.

Recognition reads tensor names and shapes only (a safetensors header). Names tell the
family: Flux.1 and Flux.2 keep Black Forest Labs' ``double_blocks`` / ``single_blocks``
(kohya and ComfyUI files) or diffusers' ``single_transformer_blocks``; Z-Image its
``layers.N.attention`` and refiners; SD 3 its ``joint_blocks``; Qwen-Image its
``img_mlp.net`` and ``img_mod.1``. Shapes settle the rest: Flux.2's MLPs are 6 times
its width (Flux.1's 4), Flux.1 is 3072 wide and has 19 double blocks, Flux.2 Klein 4B
is 3072 wide, 9B 4096, Flux.2 dev 6144, Qwen-Image 3072 with 60 blocks, SD 3 1536 or
2432, Lumina Image 2.0 (Z-Image's names) 2304.

Loading goes through the pipeline's own ``load_lora_weights``, which converts kohya,
XLabs and ComfyUI Flux files, kohya, ComfyUI and LoKr Z-Image files, kohya and ComfyUI
Qwen-Image and Flux.2 files. Two layouts it leaves as they are are renamed here first:
Flux.1 files with the original names and ``lora_A``/``lora_B`` (ComfyUI, ai-toolkit's
ComfyUI export) take kohya's suffixes, which diffusers converts; Z-Image files with the
original fused ``attention.qkv`` and ``attention.out`` are split into diffusers'
``to_q``/``to_k``/``to_v`` and ``to_out.0`` (the down matrix shared, the up matrix cut
in three). After loading, each layer the file names is looked up in the model, and
what was not applied is said.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import ModelError, first_line

# --- recognition -------------------------------------------------------------

_SD_UNET = re.compile(
    r"(?:^|[._])(?:down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)[._]"
)
_ZIMAGE = re.compile(
    r"(?:^|[._])(?:(?:noise|context)[._]refiner[._]\d"
    r"|layers[._]\d+[._](?:attention|feed[._]forward|adaLN[._]modulation)"
    r"|cap_embedder|all_x_embedder|all_final_layer)"
)
_SD3 = re.compile(r"(?:^|[._])(?:joint_blocks|x_block|context_block)[._]")
_QWEN = re.compile(r"(?:img|txt)_mlp[._]net[._]|(?:img|txt)_mod[._]1\.|(?:^|[._])txt_norm\.")
_FLUX2 = re.compile(
    r"double_stream_modulation|single_stream_modulation|time_guidance_embed|to_qkv_mlp_proj"
    r"|[._]linear_(?:in|out)\.|single_transformer_blocks[._]\d+[._]attn[._]to_out"
)
_FLUX1 = re.compile(
    r"(?:img|txt)_mod[._]lin|single_blocks[._]\d+[._]modulation[._]lin|vector_in|proj_mlp"
    r"|norm1_context|\.processor\.(?:qkv|proj)_lora"
)
_BLOCKS = re.compile(r"(?:^|[._])(?:double_blocks|single_blocks|single_transformer_blocks)[._]\d")
_DOUBLE = re.compile(r"(?<!single_)(?:transformer_blocks|double_blocks|joint_blocks)[._](\d+)[._]")
_MMDIT = re.compile(r"(?:^|[._])transformer_blocks[._]\d+[._]attn2?[._]")
_TEXT = re.compile(r"^(?:lora_te\d?_|text_encoders?(?:_\d)?\.)")
_QUERY = re.compile(r"(?:[._](?:to_q|to_k|qkv|add_q_proj|to_qkv_mlp_proj|linear1)|qkv_lora\d)$")
_DOWN = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", ".down.weight")
_UP = (".lora_up.weight", ".lora_B.weight", ".lora.up.weight", ".up.weight")

_FLUX2_VARIANTS = {3072: "Flux.2 Klein 4B", 4096: "Flux.2 Klein 9B"}


def lora_family(header: Mapping[str, Any]) -> tuple[str, str] | None:
    """The flow family (id, label) a LoRA file is made for, from its safetensors header;
    None when its names are not a flow transformer's (an SD LoRA, a text encoder alone)."""
    keys = [key for key in header if key != "__metadata__"]
    if not keys or any(_SD_UNET.search(key) for key in keys):
        return None
    unet = [key for key in keys if not _TEXT.match(key)]
    width = _width(header, unet)
    if any(_ZIMAGE.search(key) for key in unet):
        return ("lumina2", "Lumina Image 2.0") if width == 2304 else _family("zimage")
    if any(_SD3.search(key) for key in unet):
        return _family("sd3")
    if any(_QWEN.search(key) for key in unet):
        return _family("qwen-image")
    if any(_FLUX2.search(key) for key in unet):
        return _flux2(width)
    deepest = max((int(m.group(1)) for k in unet if (m := _DOUBLE.search(k))), default=0)
    if any(_BLOCKS.search(key) for key in unet):
        if any(_FLUX1.search(key) for key in unet) or deepest >= 8:  # Flux.2 has 5 or 8
            return _family("flux1")
        return _flux2(width) if _flux2_shapes(header, unet, width) else _family("flux1")
    if any(_MMDIT.search(key) for key in unet):
        if any("attn2" in key for key in unet) or width in (1536, 2432):
            return _family("sd3")
        if width != 3072:
            return None
        return _family("qwen-image" if deepest >= 19 else "flux1")
    return None


def _family(family_id: str) -> tuple[str, str]:
    from sdstudio.engine.families import FAMILIES

    return family_id, FAMILIES[family_id].label


def _flux2(width: int | None) -> tuple[str, str]:
    if width == 6144:
        return "flux2-dev", "Flux.2 dev"
    return "flux2-klein", _FLUX2_VARIANTS.get(width or 0, _family("flux2-klein")[1])


def _shape(header: Mapping[str, Any], key: str) -> list[int]:
    entry = header.get(key)
    value = entry.get("shape") if isinstance(entry, dict) else None
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def _width(header: Mapping[str, Any], keys: list[str]) -> int | None:
    """The transformer's width: what its attention's query (or fused qkv) projection
    takes, else what most of its layers take."""
    inputs: dict[int, int] = {}
    for key in keys:
        suffix = next((s for s in _DOWN if key.endswith(s)), None)
        shape = _shape(header, key)
        if suffix is None or len(shape) != 2:
            continue
        if _QUERY.search(key.removesuffix(suffix)):
            return shape[1]
        inputs[shape[1]] = inputs.get(shape[1], 0) + 1
    return max(inputs, key=lambda width: inputs[width]) if inputs else None


def _flux2_shapes(header: Mapping[str, Any], keys: list[str], width: int | None) -> bool:
    """Whether a file with Flux's original names is Flux.2's: a width Flux.1 lacks, or MLPs
    6 times as wide as the model (Flux.1's are 4 times)."""
    if width in (4096, 6144):
        return True
    if not width:
        return False
    for key in keys:
        shape = _shape(header, key)
        if len(shape) != 2:
            continue
        if key.endswith(_UP) and re.search(r"img_mlp[._]0\.", key):
            return shape[0] == 6 * width
        if key.endswith(_UP) and re.search(r"[._]linear1\.", key):
            return shape[0] == 9 * width
        if key.endswith(_DOWN) and re.search(r"[._]linear2\.", key):
            return shape[1] == 4 * width
    return False


def lora_layout(keys: list[str]) -> str:
    """The name of the tool or convention that wrote a LoRA's tensor names, for messages."""
    if any("hada_w1" in key for key in keys):
        return "LyCORIS LoHa"
    if any("lokr_w1" in key for key in keys):
        return "LyCORIS LoKr"
    if any(".processor." in key and "_lora" in key for key in keys):
        return "XLabs"
    if any(key.startswith(("lora_unet_", "lora_te", "lora_transformer_")) for key in keys):
        return "kohya/sd-scripts"
    if any(key.startswith(("diffusion_model.", "model.diffusion_model.")) for key in keys):
        return "ComfyUI"
    if any(key.startswith("base_model.model.") for key in keys):
        return "PEFT"
    if any(key.startswith(("transformer.", "text_encoder")) for key in keys):
        return "diffusers"
    return "unrecognised"


# --- loading -----------------------------------------------------------------


def flow_family(pipe: Any) -> tuple[str, str] | None:
    """The flow family (id, label) a pipeline runs, or None (a UNet model)."""
    from sdstudio.engine.families import family_of_pipeline

    found = family_of_pipeline(type(pipe).__name__)
    return (found.id, found.label) if found is not None and found.flow else None


def file_layout(path: Path) -> str:
    """:func:`lora_layout` of a safetensors file; ``""`` when its header cannot be read."""
    keys = _header_keys(path)
    return lora_layout(keys) if keys is not None else ""


def load_lora(pipe: Any, path: Path, adapter: str) -> list[str]:
    """Load a LoRA file into a flow pipeline as ``adapter``; returns notices of the parts
    that were not applied.

    Raises :class:`ModelError` for a layout diffusers cannot read for this family and
    for a file none of whose layers fit the model; diffusers' own errors pass through.
    """
    family, label = flow_family(pipe) or ("", type(pipe).__name__)
    keys = _header_keys(path)
    layout = lora_layout(keys) if keys is not None else "unrecognised"
    if keys is not None:
        _refuse_unreadable(path, keys, family, label, layout)
    source: str | dict[str, Any] = str(path)
    if keys is not None and _needs_renaming(family, keys):
        source = _renamed(family, _read_tensors(path))
    try:
        converted = _state_dict(type(pipe).lora_state_dict(_copy(source)))
    except (KeyError, ValueError, AssertionError, IndexError, RuntimeError) as error:
        raise ModelError(
            f"Could not load the LoRA {path.name}: diffusers cannot convert its {layout} "
            f"layout for {label} models ({first_line(error, 200)})."
        ) from None
    pipe.load_lora_weights(source, adapter_name=adapter)
    applied, missing, skipped = _check_applied(pipe, adapter, converted)
    if not applied:
        raise ModelError(
            f"The LoRA {path.name} ({layout} layout) has no layer that fits this {label} "
            "model: it is made for another model, or in a layout diffusers cannot read."
        )
    notices = _notices(family, label, keys or [], missing, applied + len(missing), skipped)
    return [f"Part of the LoRA {path.stem} was not applied: {notices}."] if notices else []


def _header_keys(path: Path) -> list[str] | None:
    if path.suffix.lower() != ".safetensors":
        return None
    from sdstudio.engine.models.layouts import read_safetensors_header

    try:
        return [key for key in read_safetensors_header(path) if key != "__metadata__"]
    except (OSError, ValueError):
        return None


def _refuse_unreadable(path: Path, keys: list[str], family: str, label: str, layout: str) -> None:
    kind = {"LyCORIS LoHa": "LoHa", "LyCORIS LoKr": "LoKr"}.get(layout)
    if kind == "LoHa" or (kind == "LoKr" and family not in ("zimage", "flux2-klein")):
        raise ModelError(
            f"The LoRA {path.name} is a {layout} file; diffusers cannot load {kind} networks "
            f"into {label} models. Use a plain LoRA version of it."
        )


_FLUX_ORIGINAL = re.compile(
    r"^(?:diffusion_model\.)?(?:double_blocks|single_blocks)\.\d+\..*\.lora_[AB]\.weight$"
)
_FUSED_QKV = re.compile(
    r"^(.*attention[._])qkv(\.(?:lora_A|lora_B|lora_down|lora_up)\.weight|\.alpha)$"
)
_OUT = re.compile(r"(attention([._]))out(?=\.(?:lora_|alpha))")


def _needs_renaming(family: str, keys: list[str]) -> bool:
    if family == "flux1":
        return any(_FLUX_ORIGINAL.match(key) for key in keys)
    if family == "zimage":
        return any(_FUSED_QKV.match(key) or _OUT.search(key) for key in keys)
    return False


def _renamed(family: str, state: dict[str, Any]) -> dict[str, Any]:
    """The names diffusers converts, for the two layouts it reads only under other names."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if family == "flux1":
            if key.startswith(("double_blocks.", "single_blocks.")):
                key = "diffusion_model." + key
            key = key.replace(".lora_A.weight", ".lora_down.weight")
            out[key.replace(".lora_B.weight", ".lora_up.weight")] = value
            continue
        fused = _FUSED_QKV.match(key)
        if fused is None:
            out[_OUT.sub(lambda m: f"{m.group(1)}to_out{m.group(2)}0", key)] = value
            continue
        base, rest = fused.groups()
        up = rest.startswith((".lora_B", ".lora_up"))
        parts = value.chunk(3, dim=0) if up else (value, value, value)
        for name, part in zip(("to_q", "to_k", "to_v"), parts, strict=True):
            out[f"{base}{name}{rest}"] = part.contiguous()
    return out


def _read_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _copy(source: str | dict[str, Any]) -> str | dict[str, Any]:
    """A copy for a conversion to work on: diffusers' kohya converter scales text-encoder
    tensors in place."""
    if isinstance(source, dict):
        return {key: value.clone() for key, value in source.items()}
    return source


def _state_dict(result: Any) -> dict[str, Any]:
    state = result[0] if isinstance(result, tuple) else result
    return dict(state)


_MODULE = re.compile(r"^(.+?)\.(?:lora_|lokr_|alpha$)")


def _check_applied(
    pipe: Any, adapter: str, converted: dict[str, Any]
) -> tuple[int, list[str], set[str]]:
    """How many of the converted file's layers hold ``adapter`` in the model, the layers
    that do not, and the components the pipeline does not load LoRAs into."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    loadable = set(getattr(pipe, "_lora_loadable_modules", ()))
    modules: dict[str, set[str]] = {}
    for key in converted:
        found = _MODULE.match(key)
        if found is not None:
            component, _, name = found.group(1).partition(".")
            modules.setdefault(component, set()).add(name)
    applied, missing, skipped = 0, list[str](), set[str]()
    for component, names in modules.items():
        model = getattr(pipe, component, None) if component in loadable else None
        if model is None:
            if component.startswith("text_encoder"):
                skipped.add(component)
            else:
                missing.extend(f"{component}.{name}".rstrip(".") for name in names)
            continue
        for name in sorted(names):
            layer = _submodule(model, name)
            if isinstance(layer, BaseTunerLayer) and any(
                adapter in getattr(layer, attribute, {}) for attribute in layer.adapter_layer_names
            ):
                applied += 1
            else:
                missing.append(f"{component}.{name}")
    return applied, missing, skipped


def _submodule(model: Any, name: str) -> Any:
    for candidate in (name, name.removeprefix("text_model.")):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def _notices(
    family: str, label: str, keys: list[str], missing: list[str], total: int, skipped: set[str]
) -> str:
    """What of a LoRA was left out, in words; ``""`` when nothing was."""
    parts = []
    if skipped:
        parts.append(f"its text-encoder layers (diffusers applies them to no {label} text encoder)")
    t5 = ("lora_te2_", "text_encoders.t5xxl.")
    if family == "flux1" and any(key.startswith(t5) for key in keys):
        parts.append("its T5 text-encoder layers (diffusers reads Flux.1 LoRAs' CLIP part only)")
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        parts.append(
            f"{len(missing)} of {total} layers, which diffusers did not fit to this model ({shown})"
        )
    if any("dora_scale" in key for key in keys):
        parts.append("its DoRA magnitudes")
    if any(key.endswith((".diff", ".diff_b")) for key in keys):
        parts.append("its weight and bias differences (diff, diff_b)")
    return "; ".join(parts)
