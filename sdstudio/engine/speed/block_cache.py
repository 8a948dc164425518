"""First Block Cache on the transformer families, with diffusers' own hooks.

Each step runs the first transformer block; when its output residual moved less than
the threshold (mean absolute change relative to the last computed one), the remaining
blocks are skipped and their cached contribution added back (diffusers'
``FirstBlockCacheConfig``, after ParaAttention's dynamic caching). The hooks are added
to the transformer for one pipeline call and removed after it, so a later request
without a fast mode runs the model as it was.

The Flux, Flux.2 and Qwen-Image pipelines name their denoising calls ("cond",
"uncond") and the cache keeps a state per name; a call left unnamed is named here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sdstudio.engine.errors import InvalidRequest

_HEAD = "fbc_leader_block_hook"
_BLOCK = "fbc_block_hook"
_CONTEXT = "sdstudio_cache_context"


class BlockCacheState:
    """What one pipeline call did: how many transformer calls reused the cache."""

    def __init__(self) -> None:
        self.calls = 0
        self.reused = 0


def _cache_blocks(transformer: Any) -> list[Any]:
    """The transformer blocks diffusers' cache hooks would use, in order."""
    import torch
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    return [
        block
        for name, child in transformer.named_children()
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList)
        for block in child
    ]


SUPPORTED = frozenset({"FluxTransformer2DModel", "QwenImageTransformer2DModel"})
"""The transformers diffusers' first-block cache runs on. SD3's last block returns no
text stream (the cache subtracts the first block's from it); Z-Image's blocks are not in
a list the cache looks for, and name their input ``x``, not ``hidden_states``; on
Flux.2 and Chroma the last block is a single-stream one, returning one joint tensor,
which the cache subtracts the first (two-stream) block's output pair from; Chroma's
blocks are also unknown to the cache. None of these can be mended from outside the
cache's hooks (for SD 3.x, Z-Image, Flux.2 Klein and Chroma use the TaylorSeer cache,
:mod:`sdstudio.engine.speed.taylorseer`)."""


def check_transformer(transformer: Any, label: str) -> None:
    """Raise :class:`InvalidRequest` when the first-block cache cannot run on it."""
    if type(transformer).__name__ not in SUPPORTED or len(_cache_blocks(transformer)) < 2:
        raise InvalidRequest(
            f"The first-block cache does not run on {label} models (it runs on Flux.1 "
            "and Qwen-Image); use taylorseer-cache or generate without a fast mode."
        )


def _context_hook_class() -> type:
    from diffusers.hooks import ModelHook
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    class ContextHook(ModelHook):
        """On the transformer: counts its calls and names those the pipeline leaves
        unnamed (one cache for the batched prompts)."""

        def __init__(self, state: BlockCacheState, head: Any) -> None:
            super().__init__()
            self.state = state
            self.head = head

        def new_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            self.state.calls += 1
            manager = self.head.state_manager
            named = manager._context is not None
            if not named:
                _set_cache_context(module, CacheContext("denoise"))
            try:
                original: Any = self.fn_ref.original_forward
                return original(*args, **kwargs)
            finally:
                if not named:
                    _set_cache_context(module, None)

    return ContextHook


@contextmanager
def first_block_cache(transformer: Any, threshold: float, label: str) -> Iterator[BlockCacheState]:
    """The first-block cache on ``transformer`` for the calls made inside the block."""
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache

    check_transformer(transformer, label)
    state = BlockCacheState()
    blocks = _cache_blocks(transformer)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    try:
        apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=threshold))
        head = blocks[0]._diffusers_hook.get_hook(_HEAD)
        _count_reuse(head, state)
        registry.register_hook(_context_hook_class()(state, head), _CONTEXT)
        registry.invalidate_child_registries_cache()  # the pipeline's context reaches the blocks
        yield state
    finally:
        registry.remove_hook(_CONTEXT, recurse=False)
        for block in blocks:
            hooks = HookRegistry.check_if_exists_or_initialize(block)
            hooks.remove_hook(_HEAD, recurse=False)
            hooks.remove_hook(_BLOCK, recurse=False)
        registry.invalidate_child_registries_cache()


def _count_reuse(head: Any, state: BlockCacheState) -> None:
    """Count the head block hook's decisions: it decides, once per transformer call,
    whether the other blocks run."""
    decide = head._should_compute_remaining_blocks

    def counted(residual: Any) -> bool:
        compute = bool(decide(residual))
        if not compute:
            state.reused += 1
        return compute

    head._should_compute_remaining_blocks = counted
