"""A pipeline of another kind built on a loaded pipeline's components.

diffusers' ``DiffusionPipeline.from_pipe`` casts every shared component to float32
unless it is told one dtype, which would turn a half-precision model into a float32 one
in place (doubling its memory and changing every later image) and cannot keep a model
whose parts differ in precision (a float32 VAE beside a bfloat16 transformer). The
pipelines made here share the very same modules, untouched, with the base pipeline's
settings (``requires_safety_checker``, ``force_zeros_for_empty_prompt``...) carried over
as ``from_pipe`` carries them.
"""

from __future__ import annotations

from typing import Any


def share_pipeline(factory: Any, base: Any, **replaced: Any) -> Any:
    """A ``factory`` pipeline on ``base``'s components, with the modules in ``replaced``
    (a ControlNet, say) added or swapped; components ``factory`` takes and ``base`` lacks
    are ``None`` (optional ones, such as an image encoder)."""
    expected, optional = factory._get_signature_keys(factory)
    config = dict(base.config)
    components = base.components
    arguments: dict[str, Any] = {name: components.get(name) for name in expected}
    for name in optional:
        if name in config:
            arguments[name] = config[name]
        elif f"_{name}" in config:
            arguments[name] = config[f"_{name}"]
    arguments.update(replaced)
    pipe = factory(**arguments)
    pipe.set_progress_bar_config(disable=True)
    return pipe
