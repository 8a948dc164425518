"""DeepCache for diffusers' ``UNet2DConditionModel``: reuse the deep features on the steps
between full ones.

A UNet's high-level features change slowly from one step to the next, while the work
is spread over every level. DeepCache (Ma et al., 2023) runs the whole UNet every
``interval`` steps and keeps the features that come up the decoder into the up block of
a chosen skip branch; on the steps between, only the blocks above that branch run (the
first down blocks, which give the skip connections, and the last up blocks), and the
cached features stand for everything deeper.

Here a branch is a whole block level: branch ``b`` keeps down blocks ``0..b`` and the
last ``b + 1`` up blocks. The hooks replace the forward of the skipped blocks with one
that returns :data:`SKIPPED` (which every later use in the UNet's own forward passes
through, ControlNet and T2I-Adapter residuals included), and the first kept up block
takes the cached features instead of its input. With a ``layer`` (the paper's
caching), the branch's down and up blocks are cut inside as well, keeping only their
layers that give and take the skips of down layers ``0..layer``
(:mod:`~sdstudio.engine.speed.deep_cache_layers`). The model itself is not changed:
the hooks are added for one pipeline call and removed after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sdstudio.engine.errors import InvalidRequest

HOOK = "sdstudio_deep_cache"


class _Skipped:
    """What a skipped block returns: adding anything to it, or it to anything, gives itself,
    and so does indexing it (an attention's output tuple), so the UNet's residual sums and
    tuples need no change."""

    shape: tuple[int, ...] = ()

    def __add__(self, other: object) -> _Skipped:
        return self

    def __getitem__(self, index: object) -> _Skipped:
        return self

    __radd__ = __iadd__ = __add__


SKIPPED = _Skipped()


class DeepCacheState:
    """The step count and cached features of one pipeline call."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.calls = 0
        self.full = True
        self.cached: Any = None
        self.reused = 0
        """How many UNet calls reused the cache (for tests and measurements)."""

    def start_call(self) -> None:
        """Decide whether this UNet call runs in full."""
        self.full = self.cached is None or self.calls % self.interval == 0
        if not self.full:
            self.reused += 1
        self.calls += 1


def _hook_class() -> type:
    from diffusers.hooks import ModelHook

    class CallHook(ModelHook):
        """On the UNet: counts its calls and chooses full or cached."""

        def __init__(self, state: DeepCacheState) -> None:
            super().__init__()
            self.state = state

        def pre_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            self.state.start_call()
            return args, kwargs

    return CallHook


def _skip_hook_class() -> type:
    from diffusers.hooks import ModelHook

    class SkipHook(ModelHook):
        """On a block below the branch: skipped on cached steps."""

        def __init__(self, state: DeepCacheState, outputs: int | None) -> None:
            super().__init__()
            self.state = state
            self.outputs = outputs
            """A down block's number of skip outputs; None: an up or mid block."""

        def new_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            if self.state.full:
                original: Any = self.fn_ref.original_forward
                return original(*args, **kwargs)
            if self.outputs is None:
                return SKIPPED
            return SKIPPED, (SKIPPED,) * self.outputs

    return SkipHook


def _resume_hook_class() -> type:
    from diffusers.hooks import ModelHook

    class ResumeHook(ModelHook):
        """On the first up block kept: caches its input on full steps, takes the cache on
        the others."""

        def __init__(self, state: DeepCacheState) -> None:
            super().__init__()
            self.state = state

        def pre_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            if self.state.full:
                self.state.cached = kept(module, kwargs["hidden_states"])
            else:
                kwargs = {**kwargs, "hidden_states": kept(module, self.state.cached)}
            return args, kwargs

    return ResumeHook


def freeu_on(block: Any) -> bool:
    """Whether FreeU is enabled on an up block (diffusers' own test)."""
    return all(getattr(block, name, None) for name in ("s1", "s2", "b1", "b2"))


def kept(block: Any, features: Any) -> Any:
    """``features`` as they may enter ``block``: a copy where its FreeU, which scales its
    input in place, would otherwise change the cache."""
    return features.clone() if freeu_on(block) else features


def check_unet(unet: Any, branch: int, layer: int | None = None) -> None:
    """Raise :class:`InvalidRequest` when ``branch`` is not a skip branch of this UNet, or
    ``layer`` (None: the whole block) not a layer of its block there."""
    levels = len(getattr(unet, "down_blocks", ()))
    if levels < 2 or len(getattr(unet, "up_blocks", ())) != levels:
        raise InvalidRequest("DeepCache needs a UNet with matching down and up blocks.")
    if branch > levels - 2:
        raise InvalidRequest(
            f"DeepCache branch {branch} is too deep for this UNet: its branches are 0 "
            f"to {levels - 2}."
        )
    if layer is not None:
        from sdstudio.engine.speed.deep_cache_layers import check_layer

        check_layer(unet, branch, layer)


def _down_outputs(block: Any) -> int:
    """How many skip connections a down block gives (its resnets and its downsampler)."""
    samplers = getattr(block, "downsamplers", None)
    return len(block.resnets) + (len(samplers) if samplers else 0)


@contextmanager
def deep_cache(
    unet: Any, interval: int, branch: int, layer: int | None = None
) -> Iterator[DeepCacheState]:
    """DeepCache on ``unet`` for the calls made inside the block, caching inside the
    branch's blocks from ``layer`` on (None: whole blocks); the hooks are removed after it
    (the state tells how many calls reused the cache)."""
    from diffusers.hooks import HookRegistry

    check_unet(unet, branch, layer)
    state = DeepCacheState(interval)
    levels = len(unet.down_blocks)
    skip_hook, resume_hook = _skip_hook_class(), _resume_hook_class()
    hooked: list[Any] = [unet]
    HookRegistry.check_if_exists_or_initialize(unet).register_hook(_hook_class()(state), HOOK)
    try:
        deep: list[tuple[Any, int | None]] = [
            (block, _down_outputs(block)) for block in unet.down_blocks[branch + 1 :]
        ]
        if unet.mid_block is not None:
            deep.append((unet.mid_block, None))
        deep += [(block, None) for block in unet.up_blocks[: levels - 1 - branch]]
        for block, outputs in deep:
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.register_hook(skip_hook(state, outputs), HOOK)
            hooked.append(block)
        if layer is None:
            resume = unet.up_blocks[levels - 1 - branch]
            registry = HookRegistry.check_if_exists_or_initialize(resume)
            registry.register_hook(resume_hook(state), HOOK)
            hooked.append(resume)
        else:
            from sdstudio.engine.speed.deep_cache_layers import add_layer_hooks

            add_layer_hooks(unet, state, branch, layer, skip_hook, hooked)
        yield state
    finally:
        for module in hooked:
            module._diffusers_hook.remove_hook(HOOK, recurse=False)
