"""DeepCache inside a block: the cached steps keep only the first layers of the branch's
down block and the last layers of its up block (the caching of the DeepCache paper).

A down block at level ``b`` gives the skip list ``[prev, l0, l1, ...]``: ``prev`` is
``conv_in``'s output at the top level (the previous down block's downsampler output
below it), then one entry for each of its layers (a resnet, and its attention when it
has one). Its up block has one layer more, and its layer ``j`` takes the entry
``n_up - 1 - j`` (``n_up`` the up block's number of layers). Keeping down layers
``0..L`` keeps the entries ``0..L + 1``, which the up layers ``j >= j0 = n_up - 2 - L``
consume; the features entering up layer ``j0`` are what a full step caches.

So a cached step runs the whole-block levels above the branch, down layers ``0..L`` of
the branch's down block, and up layers ``j0..`` of its up block (with the upsampler it
has below the top). The down layers above ``L`` and the downsampler return
:data:`~sdstudio.engine.speed.deep_cache.SKIPPED`, and the up block's forward is
replaced, on cached steps only, by one that pops its skips as diffusers' ``UpBlock2D``
and ``CrossAttnUpBlock2D`` do and starts at ``j0`` from the cache (FreeU, where the
UNet has it on, applied as in those blocks). Full steps run the blocks' own forward.
"""

from __future__ import annotations

import inspect
from typing import Any

from sdstudio.engine.errors import InvalidRequest

DOWN_BLOCKS = frozenset({"DownBlock2D", "CrossAttnDownBlock2D"})
UP_BLOCKS = frozenset({"UpBlock2D", "CrossAttnUpBlock2D"})


def check_layer(unet: Any, branch: int, layer: int) -> None:
    """Raise :class:`InvalidRequest` when ``layer`` is not a layer of the down block at
    ``branch`` (or that level's blocks are not ones whose layers can be cached)."""
    levels = len(unet.down_blocks)
    down, up = unet.down_blocks[branch], unet.up_blocks[levels - 1 - branch]
    kinds = type(down).__name__, type(up).__name__
    if kinds[0] not in DOWN_BLOCKS or kinds[1] not in UP_BLOCKS:
        raise InvalidRequest(
            f"DeepCache cannot cache inside this UNet's blocks ({kinds[0]}, {kinds[1]}) at "
            f"branch {branch}: use the whole blocks (layer=block)."
        )
    layers = len(down.resnets)
    if len(up.resnets) != layers + 1:
        raise InvalidRequest(
            f"DeepCache cannot cache inside the blocks at branch {branch}: the up block has "
            f"{len(up.resnets)} layers for the down block's {layers}; use the whole blocks."
        )
    if not 0 <= layer < layers:
        raise InvalidRequest(
            f"DeepCache layer {layer} is not a layer of this UNet's block at branch {branch}: "
            f"its layers are 0 to {layers - 1} (or the whole block)."
        )


def _last_module(block: Any, index: int) -> Any:
    """The module whose output is the hidden state after layer ``index`` of ``block``."""
    attentions = getattr(block, "attentions", None)
    return attentions[index] if attentions else block.resnets[index]


def _arguments(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The up block's call arguments by name, however they were passed."""
    if not args:
        return kwargs
    return dict(inspect.signature(original).bind_partial(*args, **kwargs).arguments)


def partial_up_forward(block: Any, start: int, hidden_states: Any, values: dict[str, Any]) -> Any:
    """The up ``block``'s forward from layer ``start`` on, ``hidden_states`` entering it:
    the skips of the layers before ``start`` are popped and not used."""
    import torch
    from diffusers.utils.torch_utils import apply_freeu

    from sdstudio.engine.speed.deep_cache import freeu_on

    skips = tuple(values["res_hidden_states_tuple"])
    temb = values.get("temb")
    attentions = getattr(block, "attentions", None)
    freeu = {name: getattr(block, name, None) for name in ("s1", "s2", "b1", "b2")}
    if freeu_on(block):
        hidden_states = hidden_states.clone()  # FreeU scales it in place
    for index, resnet in enumerate(block.resnets):
        skip, skips = skips[-1], skips[:-1]
        if index < start:
            continue
        if freeu_on(block):
            hidden_states, skip = apply_freeu(block.resolution_idx, hidden_states, skip, **freeu)
        hidden_states = resnet(torch.cat([hidden_states, skip], dim=1), temb)
        if attentions:
            hidden_states = attentions[index](
                hidden_states,
                encoder_hidden_states=values.get("encoder_hidden_states"),
                cross_attention_kwargs=values.get("cross_attention_kwargs"),
                attention_mask=values.get("attention_mask"),
                encoder_attention_mask=values.get("encoder_attention_mask"),
                return_dict=False,
            )[0]
    for upsampler in block.upsamplers or ():
        hidden_states = upsampler(hidden_states, values.get("upsample_size"))
    return hidden_states


def _hook_classes() -> tuple[type, type]:
    from diffusers.hooks import ModelHook

    from sdstudio.engine.speed.deep_cache import kept

    class CaptureHook(ModelHook):
        """On the module ending up layer ``j0 - 1``: caches its output on full steps."""

        def __init__(self, state: Any, block: Any) -> None:
            super().__init__()
            self.state = state
            self.block = block

        def post_forward(self, module: Any, output: Any) -> Any:
            if self.state.full:
                features = output[0] if isinstance(output, tuple) else output
                self.state.cached = kept(self.block, features)
            return output

    class PartialUpHook(ModelHook):
        """On the branch's up block: its own forward on full steps (caching what enters
        layer ``j0`` when that is the first layer), the layers from ``j0`` on the others."""

        def __init__(self, state: Any, start: int) -> None:
            super().__init__()
            self.state = state
            self.start = start

        def new_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            original: Any = self.fn_ref.original_forward
            values = _arguments(original, args, kwargs)
            if self.state.full:
                if self.start == 0:
                    self.state.cached = kept(module, values["hidden_states"])
                return original(*args, **kwargs)
            return partial_up_forward(module, self.start, self.state.cached, values)

    return CaptureHook, PartialUpHook


def add_layer_hooks(
    unet: Any, state: Any, branch: int, layer: int, skip_hook: type, hooked: list[Any]
) -> None:
    """Register the hooks inside the branch's blocks under ``HOOK`` (``skip_hook``: the
    class that makes a module return SKIPPED on cached steps), adding each module hooked
    to ``hooked`` as it goes."""
    from diffusers.hooks import HookRegistry

    from sdstudio.engine.speed.deep_cache import HOOK

    check_layer(unet, branch, layer)
    levels = len(unet.down_blocks)
    down, up = unet.down_blocks[branch], unet.up_blocks[levels - 1 - branch]
    start = len(up.resnets) - 2 - layer
    skipped: list[Any] = [*down.resnets[layer + 1 :], *(down.downsamplers or ())]
    skipped += list(getattr(down, "attentions", None) or ())[layer + 1 :]
    capture, partial = _hook_classes()
    hooks: list[tuple[Any, Any]] = [(module, skip_hook(state, None)) for module in skipped]
    if start > 0:
        hooks.append((_last_module(up, start - 1), capture(state, up)))
    hooks.append((up, partial(state, start)))
    for module, hook in hooks:
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK)
        hooked.append(module)
