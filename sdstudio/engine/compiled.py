"""An optional compiled denoiser: ``torch.compile`` of the UNet or transformer.

Compiling fuses the denoiser's small operations into fewer, larger GPU kernels; it pays
off on CUDA GPUs over many steps and images, costs a minute or more the first time,
and measured nothing on the CPU (SD 1.5 at 512x512, bfloat16 channels-last: eager was
as fast after a 112 s compile), so it is off unless the Compile setting or ``--compile``
asks for it, on any device.

- **Once per model and size**: the module is compiled in place (``nn.Module.compile``)
  when the model loads, for fixed shapes: the first image of each size (and batch)
  traces and compiles, the next ones reuse the kernels. :meth:`DenoiserCompiler.before`
  says so on the status line the first time a size comes. Inductor keeps what it
  compiled in sdstudio's cache folder (``torch-compile``), so the next start compiles
  again from its cache in seconds.
- **Recorded**: compiled kernels round a little differently, so the image's record
  names its device ``cuda (float16, compiled)`` and a re-run compiles as recorded
  (:func:`sdstudio.engine.precision.rerun_device`).
- **Never fatal**: where compiling fails (no C compiler, no Triton for the GPU, an
  operation the compiler cannot take), the denoiser goes back to eager, the status line
  says why, the call runs again from the same random state, and the image is recorded
  as not compiled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdstudio.engine.errors import first_line

log = logging.getLogger(__name__)

BACKEND = "inductor"
"""The ``torch.compile`` backend (PyTorch's own compiler)."""
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
COMPILER_MODULES = ("torch._dynamo", "torch._inductor")


def denoiser(pipe: Any) -> Any:
    """The pipeline's UNet or transformer, or None."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    return None


def is_compiled(module: Any) -> bool:
    """Whether ``module`` runs compiled (``nn.Module.compile`` was called on it)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def is_compile_failure(error: BaseException) -> bool:
    """Whether ``error`` came from the compiler rather than from the model itself."""
    return any(kind.__module__.startswith(COMPILER_MODULES) for kind in type(error).__mro__)


class DenoiserCompiler:
    """Compiles the loaded model's denoiser and tells when a new size compiles."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        """Where inductor keeps its kernels between starts (None: torch's own place)."""
        self.backend = BACKEND
        self._sizes: set[tuple[int, int, int, int]] = set()
        self.failure = ""
        """Why compiling failed for the loaded model (empty: it did not)."""

    def apply(self, pipe: Any, enabled: bool) -> None:
        """Compile the pipeline's denoiser in place where ``enabled``, else run it eager."""
        module = denoiser(pipe)
        if module is None or is_compiled(module) == enabled:
            return
        if not enabled:
            module._compiled_call_impl = None
            return
        if self.cache_dir is not None and CACHE_ENV not in os.environ:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            os.environ[CACHE_ENV] = str(self.cache_dir)
        self.failure = ""
        module.compile(backend=self.backend, dynamic=False)
        log.info("The %s runs compiled (%s)", type(module).__name__, self.backend)

    def forget(self) -> None:
        """The model was unloaded: its sizes compile again."""
        self._sizes.clear()
        self.failure = ""

    def before(
        self,
        pipe: Any,
        width: int,
        height: int,
        batch: int,
        on_status: Callable[[str], None] | None,
    ) -> None:
        """Say on the status line that this size compiles now, the first time it comes."""
        module = denoiser(pipe)
        if module is None or not is_compiled(module):
            return
        key = (id(module), width, height, batch)
        if key in self._sizes:
            return
        self._sizes.add(key)
        if on_status:
            on_status(
                f"Compiling the denoiser for {width}x{height} (once per model and size; "
                "it can take a minute)…"
            )

    def give_up(
        self, pipe: Any, error: BaseException, on_status: Callable[[str], None] | None
    ) -> None:
        """Compiling failed with ``error``: run the denoiser eager from now on."""
        module = denoiser(pipe)
        if module is not None:
            module._compiled_call_impl = None
        self.failure = compile_failure_text(error)
        log.warning("Compiling the denoiser failed; running it uncompiled: %s", error)
        if on_status:
            on_status(f"Compiling failed, so the denoiser runs uncompiled: {self.failure}")


def compile_failure_text(error: BaseException) -> str:
    """What went wrong in a compile failure, in one line: the compiler's own error where
    it wraps one (``RuntimeError: no C compiler``)."""
    cause = getattr(error, "inner_exception", None) or error.__cause__ or error
    text = first_line(cause, 300) or type(cause).__name__
    return text if cause is error else f"{type(cause).__name__}: {text}"


def generator_states(kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The random generators a pipeline call takes, each with its state now, so that a
    call that failed part-way can run again from the same randomness."""
    generator = kwargs.get("generator")
    generators: list[Any] = list(generator) if isinstance(generator, list | tuple) else [generator]
    return [(g, g.get_state()) for g in generators if hasattr(g, "get_state")]


def restore(states: list[tuple[Any, Any]]) -> None:
    """Put generators back in the states :func:`generator_states` took."""
    for generator, state in states:
        generator.set_state(state)
