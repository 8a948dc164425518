"""Token merging for the UNet families (after ToMe for Stable Diffusion, Bolya & Hoffman,
2023): fewer tokens through self-attention in the highest-resolution transformer blocks.

Self-attention costs the square of the number of tokens, and neighbouring latent pixels
are often alike. Before each such block's self-attention the tokens are split into
destinations (one per 2x2 patch, its place drawn from a generator with a fixed seed, so
a request gives the same pixels every time) and sources (the rest); the ``ratio`` of
all tokens that are sources most similar (cosine) to a destination are averaged into
it. Attention runs on what is left, and every merged token gets its destination's
result back, so the block's output has all its tokens again.

The hooks sit on the ``attn1`` of the transformer blocks of the shallowest UNet level
that has attention, for one pipeline call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HOOK = "sdstudio_token_merging"
SEED = 0
"""The seed of the destination places: fixed, so the merging is part of the request."""


class MergeState:
    """The latent size of the current UNet call, and how many attention calls merged."""

    def __init__(self, ratio: float) -> None:
        import torch

        self.ratio = ratio
        self.size: tuple[int, int] = (0, 0)
        self.generator = torch.Generator("cpu").manual_seed(SEED)
        self.merged = 0

    @property
    def reused(self) -> int:
        """How many self-attention calls ran on merged tokens."""
        return self.merged


def _grid(state: MergeState, tokens: int) -> tuple[int, int] | None:
    """The token grid (rows, columns) of a block with ``tokens`` tokens, from the latent
    size (each UNet level halves it, rounding up)."""
    height, width = state.size
    if not height or not width:
        return None
    factor = 2 ** round(math.log2(max(1.0, math.sqrt(height * width / tokens))))
    rows, columns = -(-height // factor), -(-width // factor)
    return (rows, columns) if rows * columns == tokens else None


def _split(rows: int, columns: int, generator: Any) -> tuple[Any, Any]:
    """The indices of the destination tokens (one per whole 2x2 patch) and of the sources."""
    import torch

    patch_rows, patch_columns = rows // 2, columns // 2
    chosen = torch.randint(4, (patch_rows, patch_columns), generator=generator)
    marks = torch.zeros(rows, columns, dtype=torch.int64)
    patches = torch.zeros(patch_rows, patch_columns, 4, dtype=torch.int64)
    patches.scatter_(2, chosen[..., None], -1)
    patches = patches.view(patch_rows, patch_columns, 2, 2).transpose(1, 2)
    marks[: patch_rows * 2, : patch_columns * 2] = patches.reshape(patch_rows * 2, -1)
    order = marks.flatten().argsort(stable=True)  # the destinations (-1) first
    destinations = patch_rows * patch_columns
    return order[:destinations], order[destinations:]


def merged_attention(attention: Any, x: Any, grid: tuple[int, int], state: MergeState) -> Any:
    """``attention`` run on ``x`` (batch, tokens, channels) with ``state.ratio`` of its
    tokens merged, and its result spread back over all the tokens."""
    import torch

    batch, tokens, channels = x.shape
    dst, src = _split(*grid, state.generator)
    merged = min(int(tokens * state.ratio), src.numel())
    if merged <= 0 or dst.numel() == 0:
        return attention(x)
    state.merged += 1
    metric = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    scores = metric[:, src] @ metric[:, dst].transpose(1, 2)  # (batch, sources, destinations)
    best, best_dst = scores.max(dim=-1)
    ranked = best.argsort(dim=-1, descending=True, stable=True)
    kept, moved = ranked[:, merged:], ranked[:, :merged]  # source positions
    into = best_dst.gather(1, moved)  # the destination each moved source joins

    def spread(index: Any) -> Any:
        return index[..., None].expand(-1, -1, channels)

    sources, targets = x[:, src], x[:, dst]
    targets = targets.scatter_reduce(
        1, spread(into), sources.gather(1, spread(moved)), reduce="mean", include_self=True
    )
    out = attention(torch.cat([sources.gather(1, spread(kept)), targets], dim=1))
    kept_out, target_out = out[:, : kept.shape[1]], out[:, kept.shape[1] :]
    result = out.new_empty(batch, tokens, channels)
    result[:, dst] = target_out
    src_index = src[None].expand(batch, -1)
    result.scatter_(1, spread(src_index.gather(1, kept)), kept_out)
    result.scatter_(1, spread(src_index.gather(1, moved)), target_out.gather(1, spread(into)))
    return result


def _hook_classes() -> tuple[type, type]:
    from diffusers.hooks import ModelHook

    class SizeHook(ModelHook):
        """On the UNet: notes the latent size of each call."""

        def __init__(self, state: MergeState) -> None:
            super().__init__()
            self.state = state

        def pre_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            sample = args[0] if args else kwargs["sample"]
            self.state.size = (int(sample.shape[-2]), int(sample.shape[-1]))
            return args, kwargs

    class MergeHook(ModelHook):
        """On a self-attention: runs it on merged tokens."""

        def __init__(self, state: MergeState) -> None:
            super().__init__()
            self.state = state

        def new_forward(self, module: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            forward: Any = self.fn_ref.original_forward
            grid = _grid(self.state, hidden_states.shape[1]) if hidden_states.ndim == 3 else None
            other = kwargs.get("encoder_hidden_states"), kwargs.get("attention_mask")
            if grid is None or args or any(value is not None for value in other):
                return forward(hidden_states, *args, **kwargs)
            return merged_attention(lambda x: forward(x, **kwargs), hidden_states, grid, self.state)

    return SizeHook, MergeHook


def _self_attentions(unet: Any) -> list[Any]:
    """The self-attentions of the shallowest UNet level that has transformer blocks."""
    levels = len(unet.down_blocks)
    for level, block in enumerate(unet.down_blocks):
        if getattr(block, "attentions", None):
            up = unet.up_blocks[levels - 1 - level]
            found = [
                transformer.attn1
                for owner in (block, up)
                for attention in getattr(owner, "attentions", ())
                for transformer in getattr(attention, "transformer_blocks", ())
                if getattr(transformer, "attn1", None) is not None
            ]
            if found:
                return found
    return []


@contextmanager
def token_merging(unet: Any, ratio: float) -> Iterator[MergeState]:
    """Token merging on ``unet`` for the calls made inside the block."""
    from diffusers.hooks import HookRegistry

    from sdstudio.engine.errors import InvalidRequest

    attentions = _self_attentions(unet)
    if not attentions:
        raise InvalidRequest("Token merging needs a UNet with transformer blocks.")
    state = MergeState(ratio)
    size_hook, merge_hook = _hook_classes()
    hooked = [unet, *attentions]
    HookRegistry.check_if_exists_or_initialize(unet).register_hook(size_hook(state), HOOK)
    try:
        for attention in attentions:
            HookRegistry.check_if_exists_or_initialize(attention).register_hook(
                merge_hook(state), HOOK
            )
        yield state
    finally:
        for module in hooked:
            if hasattr(module, "_diffusers_hook"):
                module._diffusers_hook.remove_hook(HOOK, recurse=False)
