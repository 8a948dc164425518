"""Applying LyCORIS files to a loaded model by changing its weights, and undoing it.

Like AUTOMATIC1111, each requested file's weight change (:mod:`.lycoris`) is added,
times the tag's weight, to the weights of the modules it names, and the original
weights are kept (on the CPU) so that another set of files, or none, starts again
from exactly the model's own weights. The set applied last is remembered: a request
with the same files and weights changes nothing. Plain LoRAs stay diffusers adapters;
they add their own change on top of the patched weights.

Module names are kohya's: the diffusers module path with ``_`` for ``.`` after
``lora_unet_``, ``lora_te_``/``lora_te1_`` (first text encoder) or ``lora_te2_``
(SDXL's second), or the original UNet's names (``input_blocks_4_1_…``), which are
translated with the UNet's ``layers_per_block``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sdstudio.engine.errors import InvalidRequest, ModelError, first_line
from sdstudio.engine.prompting import lycoris

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_CACHED_FILES = 4
"""LyCORIS files kept read (on the CPU), the least recently used beyond this dropped."""
_PEFT_PARTS = re.compile(r"(^|\.)(base_layer|lora_\w+|lokr_\w+|hada_\w+)(\.|$)")
"""Module names inside a diffusers (peft) adapter wrapper: never a target."""
_RESNET = {
    "in_layers_0": "norm1",
    "in_layers_2": "conv1",
    "emb_layers_1": "time_emb_proj",
    "out_layers_0": "norm2",
    "out_layers_3": "conv2",
    "skip_connection": "conv_shortcut",
}
_TOP = {
    "input_blocks_0_0": "conv_in",
    "out_0": "conv_norm_out",
    "out_2": "conv_out",
    "time_embed_0": "time_embedding_linear_1",
    "time_embed_2": "time_embedding_linear_2",
    "label_emb_0_0": "add_embedding_linear_1",
    "label_emb_0_2": "add_embedding_linear_2",
}
_MIDDLE = {0: "mid_block_resnets_0", 1: "mid_block_attentions_0", 2: "mid_block_resnets_1"}


class Use(Protocol):
    """A file asked for by a tag (:class:`sdstudio.engine.networks.NetworkUse`)."""

    @property
    def path(self) -> Path: ...
    @property
    def hash(self) -> str: ...
    @property
    def weight(self) -> float: ...


U = TypeVar("U", bound=Use)


class LycorisPatcher:
    """Keeps one model's weights patched with exactly the requested LyCORIS files."""

    def __init__(self) -> None:
        self._backups: dict[int, tuple[Any, torch.Tensor, torch.Tensor | None]] = {}
        self._applied: tuple[tuple[str, str, float], ...] = ()
        self._files: dict[tuple[Path, str], dict[str, dict[str, torch.Tensor]]] = {}

    def apply(
        self, pipe: Any, uses: Sequence[U], on_status: Callable[[str], None] | None = None
    ) -> list[U]:
        """Patch ``pipe``'s weights with the LyCORIS files among ``uses`` (none: its own
        weights again); the plain LoRAs, which diffusers loads, are returned. The flow
        families' pipelines take every file as a LoRA (:mod:`sdstudio.engine.flow_loras`
        says which layouts it cannot read)."""
        if getattr(pipe, "unet", None) is None:
            return list(uses)
        kinds = [lycoris.file_kind(use.path) for use in uses]
        plain = [use for use, kind in zip(uses, kinds, strict=True) if kind == "lora"]
        self._apply(
            [use for use, kind in zip(uses, kinds, strict=True) if kind != "lora"], pipe, on_status
        )
        return plain

    def _apply(
        self, uses: Sequence[Use], pipe: Any, on_status: Callable[[str], None] | None
    ) -> None:
        key = tuple((str(u.path), u.hash, u.weight) for u in uses)
        if key == self._applied:
            return
        self.restore()
        if not uses:
            return
        targets = _targets(pipe)
        per_block = getattr(pipe.unet.config, "layers_per_block", None)
        per_block = per_block if isinstance(per_block, int) else None
        try:
            for use in uses:
                if use.weight != 0:
                    layers = {}
                    for name in self._read(use.path, use.hash):
                        layers[name] = _find(targets, name, per_block)
                    self._apply_file(layers, use, on_status)
        except BaseException:
            self.restore()
            raise
        self._applied = key

    def restore(self) -> None:
        """Put back the original weights of every patched module."""
        import torch

        with torch.no_grad():
            for module, weight, bias in self._backups.values():
                module.weight.copy_(weight)
                if bias is not None:
                    module.bias.copy_(bias)
        self._backups.clear()
        self._applied = ()

    def forget(self) -> None:
        """Restore the weights and drop the files read (the model goes away)."""
        self.restore()
        self._files.clear()

    def _apply_file(
        self,
        layers: dict[str, Any],
        use: Use,
        on_status: Callable[[str], None] | None,
    ) -> None:
        path = use.path
        modules = self._read(path, use.hash)
        kind = lycoris.KIND_LABELS[lycoris.file_kind(path)]
        missing = [name for name in modules if layers.get(name) is None]
        if len(missing) == len(modules):
            raise ModelError(
                f"Could not load the {kind} {path.name}: none of its {len(modules)} modules "
                f"is in this model ({missing[0]}); it may be made for another model family."
            )
        log.info("Applying %s %s at %g", kind, path, use.weight)
        for name, parts in modules.items():
            if layers.get(name) is not None:
                try:
                    self._patch(layers[name], parts, use.weight)
                except ModelError as error:
                    raise ModelError(
                        f"Could not load the {kind} {path.name} ({name}): {error}."
                    ) from None
        if missing:
            notice = (
                f"The {kind} {path.stem}: {len(missing)} of its {len(modules)} modules are not "
                f"in this model and were left out ({', '.join(missing[:3])}"
                f"{', …' if len(missing) > 3 else ''})."
            )
            log.warning("%s", notice)
            if on_status:
                on_status(notice)

    def _patch(self, module: Any, parts: dict[str, torch.Tensor], weight: float) -> None:
        """Add ``weight`` times the module's change to its weight (and bias)."""
        target = module.weight
        if target.device.type == "meta":
            raise InvalidRequest(
                "LyCORIS files cannot change a model whose layers stream to the GPU one by "
                "one; choose another memory setting."
            )
        delta = lycoris.module_delta(parts, target.shape)
        bias_delta = parts.get("diff_b")
        if bias_delta is not None and module.bias is None:
            raise ModelError("it changes a bias the model's layer does not have")
        if id(module) not in self._backups:
            bias = module.bias.detach().to("cpu", copy=True) if bias_delta is not None else None
            self._backups[id(module)] = (module, target.detach().to("cpu", copy=True), bias)
        elif bias_delta is not None and self._backups[id(module)][2] is None:
            saved = self._backups[id(module)]
            self._backups[id(module)] = (*saved[:2], module.bias.detach().to("cpu", copy=True))
        import torch

        with torch.no_grad():
            _add(target, delta, weight)
            if bias_delta is not None:
                _add(module.bias, bias_delta.float().reshape(module.bias.shape), weight)

    def _read(self, path: Path, file_hash: str) -> dict[str, dict[str, torch.Tensor]]:
        """The file's modules, read once while it is among the last files used."""
        key = (path, file_hash)
        if key in self._files:
            self._files[key] = self._files.pop(key)
            return self._files[key]
        try:
            modules = lycoris.group_modules(lycoris.read_tensors(path))
        except ModelError as error:
            raise ModelError(f"Could not load the network {path.name}: {error}.") from None
        except Exception as error:  # safetensors raises several types for a bad file
            problem = first_line(error)
            raise ModelError(f"Could not read the network {path.name}: {problem}") from None
        while len(self._files) >= MAX_CACHED_FILES:
            self._files.pop(next(iter(self._files)))
        self._files[key] = modules
        return modules


def _add(target: torch.Tensor, delta: torch.Tensor, weight: float) -> None:
    """``target += weight * delta``, computed in float32 and stored in the target's type."""
    changed = target.float() + delta.to(target.device) * weight
    target.copy_(changed.to(target.dtype))


def _targets(pipe: Any) -> dict[str, torch.nn.Module]:
    """Kohya module name → the layer (with a weight) it changes, for ``pipe``'s UNet and
    text encoders."""
    targets = _layers(pipe.unet, "lora_unet_")
    for prefix, attribute in (
        ("lora_te_", "text_encoder"),
        ("lora_te1_", "text_encoder"),
        ("lora_te2_", "text_encoder_2"),
    ):
        encoder = getattr(pipe, attribute, None)
        if encoder is not None:
            targets.update(_layers(encoder, prefix))
    return targets


def layer_finder(pipe: Any) -> Callable[[str], Any]:
    """Kohya module name -> the layer of ``pipe``'s UNet or text encoders it changes (a
    diffusers name or the original UNet's), or ``None`` when the model has no such layer."""
    targets = _targets(pipe)
    per_block = getattr(pipe.unet.config, "layers_per_block", None)
    per_block = per_block if isinstance(per_block, int) else None
    return lambda name: _find(targets, name, per_block)


def _find(targets: dict[str, torch.nn.Module], name: str, per_block: int | None) -> Any:
    """The layer a file's module name means: a diffusers name, or an original UNet's."""
    layer = targets.get(name)
    if layer is None and per_block is not None and name.startswith("lora_unet_"):
        diffusers = ldm_name(name.removeprefix("lora_unet_"), per_block)
        layer = targets.get(f"lora_unet_{diffusers}") if diffusers else None
    return layer


def _named_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, layer) of every layer with weights, looking through adapter wrappers."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
    found: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if not name or _PEFT_PARTS.search(name):
            continue
        layer = getattr(module, "base_layer", module)
        if isinstance(layer, kinds):
            found.append((name, layer))
    return found


def _layers(model: torch.nn.Module, prefix: str) -> dict[str, torch.nn.Module]:
    return {prefix + name.replace(".", "_"): layer for name, layer in _named_layers(model)}


def ldm_name(name: str, per_block: int) -> str | None:
    """The diffusers name (``_`` for ``.``) of an original (LDM) UNet module name such as
    ``input_blocks_4_1_transformer_blocks_0_attn2_to_k``; ``None`` when it is not one."""
    if name in _TOP:
        return _TOP[name]
    found = re.fullmatch(r"middle_block_(\d+)_(.+)", name)
    if found:
        where, rest = _MIDDLE.get(int(found[1])), found[2]
        if where is None:
            return None
        inner = rest if where.endswith("attentions_0") else _RESNET.get(rest)
        return f"{where}_{inner}" if inner else None
    found = re.fullmatch(r"(input|output)_blocks_(\d+)_(\d+)_(.+)", name)
    if not found:
        return None
    side, index, slot, rest = found[1], int(found[2]), int(found[3]), found[4]
    if side == "input":
        if index == 0:
            return None
        block, layer = divmod(index - 1, per_block + 1)
        if layer == per_block:
            return f"down_blocks_{block}_downsamplers_0_conv" if rest == "op" else None
        base = f"down_blocks_{block}"
    else:
        block, layer = divmod(index, per_block + 1)
        base = f"up_blocks_{block}"
        if slot > 0 and rest == "conv":
            return f"{base}_upsamplers_0_conv"
    if slot == 0:
        inner = _RESNET.get(rest)
        return f"{base}_resnets_{layer}_{inner}" if inner else None
    return f"{base}_attentions_{layer}_{rest}" if slot == 1 else None
