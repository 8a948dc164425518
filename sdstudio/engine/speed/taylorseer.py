"""TaylorSeer on the transformer families, with diffusers' own hooks.

The first ``warmup`` steps run the whole transformer. After them, one step in
``interval`` runs it in full and the steps between are forecast: the transformer's
blocks are skipped and its output layer gives a Taylor expansion (to ``order``) of
its last full outputs over the steps since (diffusers' ``TaylorSeerCacheConfig`` with
the blocks skipped and the output layer predicted, its "lite" form, after TaylorSeer:
arXiv 2503.06923). A forecast step costs the embeddings and the output layer only.

The hooks are added to the transformer for one pipeline call and removed after it, so
a later request without a fast mode runs the model as it was, and every call starts
from a fresh state: the same request gives the same pixels.

The hooks keep one state per denoising stream. The Flux, Flux.2 and Qwen-Image
pipelines name their streams ("cond", "uncond"); SD3, Z-Image and Chroma do not, so
here the calls made at the same timestep are named by their order (Chroma's
unconditional pass, SD3's skip-layer pass), each with its own forecast.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sdstudio.engine.errors import InvalidRequest

_HOOK = "taylorseer_cache"
_CONTEXT = "sdstudio_taylorseer_context"

LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "FluxTransformer2DModel": (("transformer_blocks", "single_transformer_blocks"), "proj_out"),
    "ChromaTransformer2DModel": (("transformer_blocks", "single_transformer_blocks"), "proj_out"),
    "Flux2Transformer2DModel": (("transformer_blocks", "single_transformer_blocks"), "proj_out"),
    "QwenImageTransformer2DModel": (("transformer_blocks",), "proj_out"),
    "SD3Transformer2DModel": (("transformer_blocks",), "proj_out"),
    "ZImageTransformer2DModel": (("noise_refiner", "context_refiner", "layers"), "all_final_layer"),
}
"""Per transformer class: the block lists skipped on forecast steps, and the output
layer (or the dict of them) whose output is forecast."""


class TaylorSeerState:
    """What one pipeline call did: how many transformer calls were forecast."""

    def __init__(self) -> None:
        self.calls = 0
        self.reused = 0


def check_transformer(transformer: Any, label: str) -> None:
    """Raise :class:`InvalidRequest` when TaylorSeer cannot run on it."""
    if type(transformer).__name__ not in LAYOUTS or not _skipped(transformer):
        raise InvalidRequest(
            f"The TaylorSeer cache does not run on {label} models (it runs on Flux.1, "
            "Flux.2 Klein, SD 3.x, Qwen-Image, Z-Image and Chroma); generate without a "
            "fast mode."
        )


def _skipped(transformer: Any) -> list[str]:
    """The names of the blocks skipped on forecast steps. A block that gives no text
    stream (SD3's last, ``context_pre_only``) still runs: the hook needs tensors."""
    lists, _ = LAYOUTS[type(transformer).__name__]
    names = []
    for list_name in lists:
        blocks = getattr(transformer, list_name, None)
        for index, block in enumerate(blocks if blocks is not None else ()):
            if not getattr(block, "context_pre_only", False):
                names.append(f"{list_name}.{index}")
    return names


def _output_layers(transformer: Any) -> list[str]:
    _, output = LAYOUTS[type(transformer).__name__]
    layer = getattr(transformer, output)
    if hasattr(layer, "keys"):
        return [f"{output}.{key}" for key in layer]
    return [output]


def _context_hook_class() -> type:
    from diffusers.hooks import ModelHook
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    class ContextHook(ModelHook):
        """On the transformer: counts its calls and their forecasts, and names the calls
        the pipeline leaves unnamed by their order at the same timestep."""

        def __init__(self, state: TaylorSeerState, outputs: list[Any]) -> None:
            super().__init__()
            self.state = state
            self.outputs = outputs
            self.timestep: float | None = None
            self.order = 0

        def new_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            self.state.calls += 1
            named = self.outputs[0].state_manager._context is not None
            if not named:
                timestep = _timestep(args, kwargs)
                same = timestep is not None and timestep == self.timestep
                self.order = self.order + 1 if same else 0
                self.timestep = timestep
                _set_cache_context(module, CacheContext(f"pass {self.order}"))
            try:
                original: Any = self.fn_ref.original_forward
                output = original(*args, **kwargs)
                if any(_forecast(hook) for hook in self.outputs):
                    self.state.reused += 1
                return output
            finally:
                if not named:
                    _set_cache_context(module, None)

    return ContextHook


def _timestep(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
    """The call's timestep (``timestep=``; Z-Image's second argument ``t``)."""
    value = kwargs.get("timestep", kwargs.get("t", args[1] if len(args) > 1 else None))
    try:
        return float(value.flatten()[0]) if value is not None else None
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _forecast(hook: Any) -> bool:
    """Whether the output hook's last call in the current stream was a forecast."""
    states = hook.state_manager._state_cache
    context = hook.state_manager._context
    state = states.get(context.name) if context is not None else None
    return (
        state is not None
        and state.current_step >= 0
        and state.last_update_step != (state.current_step)
    )


@contextmanager
def taylorseer_cache(
    transformer: Any, interval: int, warmup: int, order: int, label: str
) -> Iterator[TaylorSeerState]:
    """TaylorSeer on ``transformer`` for the calls made inside the block."""
    import torch
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.taylorseer_cache import TaylorSeerCacheConfig, apply_taylorseer_cache

    check_transformer(transformer, label)
    skipped = _skipped(transformer)
    outputs = _output_layers(transformer)
    config = TaylorSeerCacheConfig(
        cache_interval=interval,
        disable_cache_before_step=warmup,
        max_order=order,
        taylor_factors_dtype=torch.float32,
        skip_predict_identifiers=["|".join(re.escape(name) for name in skipped)],
        cache_identifiers=["|".join(re.escape(name) for name in outputs)],
    )
    state = TaylorSeerState()
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    hooked = [transformer.get_submodule(name) for name in (*skipped, *outputs)]
    try:
        apply_taylorseer_cache(transformer, config)
        output_hooks = [
            transformer.get_submodule(name)._diffusers_hook.get_hook(_HOOK) for name in outputs
        ]
        registry.register_hook(_context_hook_class()(state, output_hooks), _CONTEXT)
        registry.invalidate_child_registries_cache()  # the pipeline's context reaches the hooks
        yield state
    finally:
        registry.remove_hook(_CONTEXT, recurse=False)
        for module in hooked:
            HookRegistry.check_if_exists_or_initialize(module).remove_hook(_HOOK, recurse=False)
        registry.invalidate_child_registries_cache()
