"""LyCORIS network files: what a file holds and the weight change each module makes.

LyCORIS files keep kohya's module names (``lora_unet_…``, ``lora_te_…``) and store,
per module, one of several factorisations of the change ΔW to the module's weight:

- LoHa (``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``): the Hadamard
  (element-wise) product ``(w1a @ w1b) * (w2a @ w2b)``, times ``alpha / rank``.
  With Tucker cores ``hada_t1``/``hada_t2`` (convolutions) each factor is
  ``Σ_ij t[i, j, …] · a[i, out] · b[j, in]`` and ``a`` is stored (rank, out).
- LoKr (``lokr_w1`` or ``lokr_w1_a @ lokr_w1_b``, ``lokr_w2`` or
  ``lokr_w2_a @ lokr_w2_b``, optional Tucker core ``lokr_t2``): the Kronecker
  product ``w1 ⊗ w2``; ``alpha / rank`` applies only when a factor is low-rank
  (rank: the first dimension of ``w1_b``, else of ``w2_b``), a product of two
  full factors is taken as it is.
- full (``diff``, optional ``diff_b``): ΔW itself, and a change of the bias.
- plain LoRA layers inside such a file (``lora_up``/``lora_down``, LoCon):
  ``up @ down`` times ``alpha / rank``; with ``lora_mid`` (a Tucker core)
  ``Σ_ij mid[i, j, …] · up[out, i] · down[j, in]``.

A missing ``alpha`` means a scale of 1, as AUTOMATIC1111 reads these files.
(IA)^3 (``on_input``), DoRA (``dora_scale``), OFT/BOFT and GLoRA change a module
in other ways and are refused by name. Plain LoRA files are not LyCORIS files:
:func:`file_kind` says ``lora`` for them and diffusers loads them.

Old kohya and LyCORIS saves are pickles (``.pt``, ``.ckpt``) holding the same tensors:
:func:`read_tensors` opens them only through the restricted loader
(:func:`sdstudio.engine.models.loading.load_pickle_state_dict`), which refuses a pickle
that holds code with a :class:`ModelError`, and they are then applied as the
safetensors files are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import ModelError
from sdstudio.engine.models import layouts

if TYPE_CHECKING:
    import torch

_WIDTH_FAMILIES = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL")}
"""The text width a UNet's cross-attention reads, by family."""
KIND_LABELS = {"loha": "LoHa", "lokr": "LoKr", "full": "full", "lora": "LoRA"}
"""How the model list and messages name each kind of file."""

_MARKS = (
    ("loha", (".hada_w1_a",)),
    ("lokr", (".lokr_w1", ".lokr_w1_a")),
    ("full", (".diff",)),
)
"""The tensor-name endings that tell each supported kind."""
_REFUSED = (
    ("(IA)^3", (".on_input",)),
    ("DoRA", (".dora_scale",)),
    ("OFT", (".oft_blocks", ".oft_diag", ".oft_r")),
    ("GLoRA", (".a1.weight", ".b1.weight")),
)
"""Kinds that change a module by more than adding to its weight."""
_PARTS = (
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_t2",
    "diff",
    "diff_b",
    "lora_up.weight",
    "lora_down.weight",
    "lora_mid.weight",
    "alpha",
)


def header_kind(keys: Iterable[str]) -> str:
    """``loha``, ``lokr``, ``full`` or ``lora`` from a file's tensor names (several
    kinds in one file: the first of LoHa, LoKr, full); a kind this version cannot apply
    raises :class:`ModelError` naming it."""
    names = [key for key in keys if key != "__metadata__"]
    for label, endings in _REFUSED:
        if any(name.endswith(endings) for name in names):
            raise ModelError(
                f"it is a {label} network file; {label} files cannot be used yet "
                "(LoRA, LoHa, LoKr and full-difference files can)"
            )
    for kind, endings in _MARKS:
        if any(name.endswith(endings) for name in names):
            return kind
    return "lora"


def labelled_family(header: dict[str, Any]) -> tuple[str, str]:
    """:func:`network_family`, its label followed by the kind for a file that is not a
    plain LoRA (``SD 1.x LoHa``, ``SDXL DoRA``), for the model list."""
    family_id, label = network_family(header)
    keys = [key for key in header if key != "__metadata__"]
    kinds = [name for name, endings in _REFUSED if any(k.endswith(endings) for k in keys)]
    if not kinds:
        kinds = [KIND_LABELS[header_kind(keys)]]
    return family_id, label if kinds == ["LoRA"] else f"{label} {kinds[0]}"


def file_kind(path: Path) -> str:
    """:func:`header_kind` of a network file: a safetensors file's from its header only
    (an unreadable header is ``lora``: diffusers' loader decides), a pickle's from its
    tensors, read through the restricted loader (a pickle holding code raises
    :class:`ModelError`)."""
    if path.suffix.lower() != ".safetensors":
        try:
            stat = path.stat()
        except OSError:
            return "lora"
        return _pickle_kind(str(path), stat.st_mtime_ns, stat.st_size)
    try:
        header = layouts.read_safetensors_header(path)
    except (OSError, ValueError):
        return "lora"
    try:
        return header_kind(header)
    except ModelError as error:
        raise ModelError(f"Could not load the network {path.name}: {error}.") from None


@functools.lru_cache(maxsize=32)
def _pickle_kind(path: str, _mtime: int, _size: int) -> str:
    """A pickle's kind, read once per version of the file (a LoRA is read at each
    request's check, and a pickle cannot be read by its header alone)."""
    file = Path(path)
    try:
        return header_kind(read_tensors(file))
    except ModelError as error:
        if str(error).startswith(file.name):  # the loader's own sentence names the file
            raise
        raise ModelError(f"Could not load the network {file.name}: {error}.") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A LoRA or LyCORIS file's tensors on the CPU: a safetensors file, or a pickle
    (``.pt``, ``.ckpt``, ``.bin``) through the restricted loader; raises
    :class:`ModelError` for a pickle that holds code, or one without tensors."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    from sdstudio.engine.models.loading import load_pickle_state_dict

    tensors = load_pickle_state_dict(path)
    if not tensors:
        raise ModelError(f"{path.name} holds no tensors: it is not a LoRA or LyCORIS file.")
    return tensors


def pointwise_mismatches(
    shapes: Mapping[str, Sequence[int]], layer_of: Callable[[str], Any]
) -> list[str]:
    """The ``lora_down``/``lora_up`` weights stored in the other form than their layer's:
    2-D for a 1 x 1 convolution, or 1 x 1 4-D for a linear layer. SD 1.x's ``proj_in`` and
    ``proj_out`` are 1 x 1 convolutions, SD 2.x's and SDXL's linear layers, and files
    made with one form are used with the other (AUTOMATIC1111 takes either)."""
    import torch

    found = []
    for key, shape in shapes.items():
        if not key.endswith((".lora_down.weight", ".lora_up.weight")):
            continue
        layer = layer_of(key.split(".", 1)[0])
        pointwise = isinstance(layer, torch.nn.Conv2d) and tuple(layer.kernel_size) == (1, 1)
        if (pointwise and len(shape) == 2) or (
            isinstance(layer, torch.nn.Linear) and len(shape) == 4 and list(shape[2:]) == [1, 1]
        ):
            found.append(key)
    return found


def refit_pointwise(
    tensors: dict[str, torch.Tensor], keys: Iterable[str]
) -> dict[str, torch.Tensor]:
    """``tensors`` with the weights :func:`pointwise_mismatches` found in their layer's form."""
    fitted = dict(tensors)
    for key in keys:
        tensor = fitted[key]
        fitted[key] = tensor.flatten(1) if tensor.dim() == 4 else tensor[:, :, None, None]
    return fitted


def lora_source(pipe: Any, path: Path) -> str | dict[str, torch.Tensor]:
    """What diffusers' ``load_lora_weights`` is given for a plain LoRA: the file's path,
    or its tensors when it is a pickle (read only through the restricted loader, never
    diffusers' own) or when its 1 x 1 layers are stored in the other form than the
    model's (:func:`pointwise_mismatches`)."""
    from sdstudio.engine.prompting.lycoris_patch import layer_finder

    pickle = path.suffix.lower() != ".safetensors"
    tensors = read_tensors(path) if pickle else None
    if getattr(pipe, "unet", None) is None:
        return tensors if tensors is not None else str(path)
    if tensors is not None:
        shapes: dict[str, Sequence[int]] = {k: list(t.shape) for k, t in tensors.items()}
    else:
        try:
            header = layouts.read_safetensors_header(path)
        except (OSError, ValueError):
            return str(path)  # diffusers' loader says what is wrong with it
        shapes = {k: _shape(entry) for k, entry in header.items() if k != "__metadata__"}
    wrong = pointwise_mismatches(shapes, layer_finder(pipe))
    if not wrong:
        return tensors if tensors is not None else str(path)
    return refit_pointwise(tensors if tensors is not None else read_tensors(path), wrong)


def network_family(header: dict[str, Any]) -> tuple[str, str]:
    """The model family of a LoRA or LyCORIS file (:func:`layouts.network_family`),
    LyCORIS files told by the input width of a cross-attention key projection."""
    family = layouts.network_family(header)
    if family[0] != "unknown":
        return family
    shapes = {key: _shape(entry) for key, entry in header.items() if key != "__metadata__"}
    bases = {key.rsplit(".", 1)[0] for key in shapes if "attn2" in key and "to_k" in key}
    for base in sorted(bases):
        width = _input_width(shapes, base)
        if width is not None:
            return _WIDTH_FAMILIES.get(width, family)
    return family


def _shape(entry: Any) -> list[int]:
    value = entry.get("shape") if isinstance(entry, dict) else None
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def _input_width(shapes: Mapping[str, list[int]], base: str) -> int | None:
    """A module's input features from the shapes of its LyCORIS tensors."""
    hada = shapes.get(f"{base}.hada_w1_b")
    if hada and len(hada) == 2:
        return hada[1]
    diff = shapes.get(f"{base}.diff")
    if diff and len(diff) == 2:
        return diff[1]
    w1 = shapes.get(f"{base}.lokr_w1") or shapes.get(f"{base}.lokr_w1_b")
    w2 = shapes.get(f"{base}.lokr_w2") or shapes.get(f"{base}.lokr_w2_b")
    if w1 and w2 and len(w1) == 2 and len(w2) == 2:
        return w1[1] * w2[1]
    return None


def group_modules(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The file's tensors by module name: ``{module: {part: tensor}}``; a tensor of a
    part this version does not know raises :class:`ModelError`."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for part in _PARTS:
            if key.endswith("." + part):
                modules.setdefault(key[: -len(part) - 1], {})[part] = tensor
                break
        else:
            raise ModelError(f"it holds the tensor {key!r}, which is not a known network part")
    return modules


def module_delta(parts: Mapping[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """A module's weight change ΔW (already scaled by alpha / rank) for a weight of
    ``shape``, in float32; parts that do not fit raise :class:`ModelError`."""
    p = {name: t.float() for name, t in parts.items()}
    alpha = float(p["alpha"]) if "alpha" in p else None
    try:
        if "hada_w1_a" in p:
            delta = loha_delta(p, alpha)
        elif "lokr_w1" in p or "lokr_w1_a" in p:
            delta = lokr_delta(p, alpha)
        elif "diff" in p:
            delta = p["diff"]
        elif "lora_up.weight" in p:
            up, down = p["lora_up.weight"], p["lora_down.weight"]
            scale = _scale(alpha, down.shape[0])
            if "lora_mid.weight" in p:  # LoCon's Tucker form: 1 x 1, k x k, 1 x 1
                delta = tucker(p["lora_mid.weight"], up.flatten(1).T, down.flatten(1)) * scale
            else:  # a k x k down and a 1 x 1 up convolution, or two linear layers
                delta = (up.flatten(1) @ down.flatten(1)) * scale
        else:
            raise KeyError(next(iter(p), "?"))
    except KeyError as error:
        raise ModelError(f"it lacks the tensor {error.args[0]!r} of a module") from None
    except RuntimeError as error:
        raise ModelError(f"its tensors do not fit together ({error})") from None
    if delta.numel() != shape.numel():
        raise ModelError(
            f"a module's change has the shape {tuple(delta.shape)}, the model's weight "
            f"{tuple(shape)}; it may be made for another model family"
        )
    return delta.reshape(shape)


def loha_delta(p: Mapping[str, torch.Tensor], alpha: float | None) -> torch.Tensor:
    """``(w1a @ w1b) * (w2a @ w2b) * alpha / rank``, or its Tucker form."""
    rank = p["hada_w1_b"].shape[0]
    if "hada_t1" in p and "hada_t2" in p:
        first = tucker(p["hada_t1"], p["hada_w1_a"], p["hada_w1_b"])
        second = tucker(p["hada_t2"], p["hada_w2_a"], p["hada_w2_b"])
    else:
        first = p["hada_w1_a"].flatten(1) @ p["hada_w1_b"].flatten(1)
        second = p["hada_w2_a"].flatten(1) @ p["hada_w2_b"].flatten(1)
    return first * second * _scale(alpha, rank)


def lokr_delta(p: Mapping[str, torch.Tensor], alpha: float | None) -> torch.Tensor:
    """``w1 ⊗ w2``, times ``alpha / rank`` when a factor is low-rank."""
    factored = "lokr_w1" not in p or "lokr_w2" not in p
    w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
    if "lokr_w2" in p:
        w2 = p["lokr_w2"]
    elif "lokr_t2" in p:
        w2 = tucker(p["lokr_t2"], p["lokr_w2_a"], p["lokr_w2_b"])
    else:
        w2b = p["lokr_w2_b"]
        w2 = (p["lokr_w2_a"] @ w2b.flatten(1)).reshape(-1, *w2b.shape[1:])
    while w1.dim() < w2.dim():
        w1 = w1.unsqueeze(-1)
    import torch

    delta = torch.kron(w1, w2.contiguous())  # kron views its operands
    if not factored:
        return delta
    rank = p["lokr_w1_b"].shape[0] if "lokr_w1_b" in p else p["lokr_w2_b"].shape[0]
    return delta * _scale(alpha, rank)


def tucker(core: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``Σ_ij core[i, j, …] · up[i, out] · down[j, in]``: a (out, in, …) factor from a
    Tucker core (rank, rank, …) and its two (rank, …) mode matrices."""
    import torch

    return torch.einsum("ij...,ip,jr->pr...", core, up, down)


def _scale(alpha: float | None, rank: int) -> float:
    return 1.0 if alpha is None else alpha / rank
