"""Opt-in fast modes: step caches and token merging on the denoiser, for one pipeline
call at a time.

:func:`check` refuses a mode the loaded model cannot take, before anything runs;
:func:`applied` adds the mode's hooks to the pipeline's denoiser for the calls made
inside it and removes them after, so the next request without a fast mode computes
exactly what it computed before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.speed.fast_mode import (
    DEEP_CACHE,
    FIRST_BLOCK_CACHE,
    TAYLORSEER_CACHE,
    TOKEN_MERGING,
    FastMode,
    parse_fast_mode,
)

__all__ = ["FastMode", "applied", "check", "parse_fast_mode"]


def check(fast: FastMode | None, pipe: Any, label: str) -> None:
    """Raise :class:`InvalidRequest` when the pipeline's model cannot take ``fast``."""
    if fast is None:
        return
    unet = getattr(pipe, "unet", None)
    transformer = getattr(pipe, "transformer", None)
    if fast.for_unet:
        if unet is None:
            raise InvalidRequest(
                f"The {fast.method} fast mode runs on UNet models (SD 1.x, 2.x, XL); "
                f"{label} models are transformers: use {FIRST_BLOCK_CACHE} or "
                f"{TAYLORSEER_CACHE}."
            )
        if fast.method == DEEP_CACHE:
            from sdstudio.engine.speed.deep_cache import check_unet

            check_unet(unet, fast.branch, fast.layer)
        return
    if transformer is None:
        raise InvalidRequest(
            f"The {fast.method} fast mode runs on transformer models (Flux, SD 3.x, "
            f"Qwen-Image, Z-Image, Chroma); {label} models have a UNet: use {DEEP_CACHE} or "
            f"{TOKEN_MERGING}."
        )
    if fast.method == TAYLORSEER_CACHE:
        from sdstudio.engine.speed import taylorseer

        taylorseer.check_transformer(transformer, label)
        return
    from sdstudio.engine.speed.block_cache import check_transformer

    check_transformer(transformer, label)


@contextmanager
def applied(pipe: Any, fast: FastMode | None, label: str) -> Iterator[Any]:
    """``fast`` on the pipeline's denoiser for the calls made inside the block; gives the
    mode's state (its ``reused`` count: how many denoiser calls skipped work), or None."""
    if fast is None:
        yield None
        return
    check(fast, pipe, label)
    if fast.method == DEEP_CACHE:
        from sdstudio.engine.speed.deep_cache import deep_cache

        with deep_cache(pipe.unet, fast.interval, fast.branch, fast.layer) as state:
            yield state
    elif fast.method == TOKEN_MERGING:
        from sdstudio.engine.speed.token_merging import token_merging

        with token_merging(pipe.unet, fast.ratio) as state:
            yield state
    elif fast.method == TAYLORSEER_CACHE:
        from sdstudio.engine.speed.taylorseer import taylorseer_cache

        transformer = pipe.transformer
        with taylorseer_cache(transformer, fast.interval, fast.warmup, fast.order, label) as state:
            yield state
    else:
        from sdstudio.engine.speed.block_cache import first_block_cache

        with first_block_cache(pipe.transformer, fast.threshold, label) as state:
            yield state
