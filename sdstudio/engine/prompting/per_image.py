"""Generating a request whose prompts hold wildcards or variants.

Each image of the batch resolves the templates with its own seed (image *i* with
``seed + i``, see :mod:`~sdstudio.engine.prompting.wildcards`), so the images of one
batch may have different prompts. Every image is generated as the batch-1 request of
its seed and resolved prompts, which is what its record re-creates: the pixels are
those of running that resolved prompt alone.

The record keeps the request with the templates (re-running it resolves them again
with the same seed, to the same prompts) and the resolved prompts in
``extra["wildcards"]``, which the A1111 text writes as the prompt, with the templates
as Dynamic Prompts' ``Template`` and ``Negative Template``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.prompting.wildcards import Wildcards, has_wildcards
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.variation_noise import image_seeds

if TYPE_CHECKING:
    from sdstudio.engine.generation import GeneratedImage
    from sdstudio.engine.progress import Progress

RECORD_KEY = "wildcards"
"""The key of :attr:`ImageRecord.extra` that holds an image's resolved prompts."""

Run = Callable[..., Iterator["GeneratedImage"]]
"""Generates a request with its prompts as they are (``run(request, on_progress=...)``)."""


def resolved_prompts(
    request: GenerationRequest, seed: int, wildcards: Wildcards
) -> tuple[str, str]:
    """The prompt and negative prompt of the image made with ``seed``."""
    return wildcards.resolve(request.prompt, seed), wildcards.resolve(request.negative_prompt, seed)


def generate(
    request: GenerationRequest,
    folders: Sequence[Path],
    run: Run,
    on_progress: Callable[[Progress], None] | None,
) -> Iterator[GeneratedImage]:
    """The request's images, each generated with its own resolved prompts by ``run``.

    Every image's prompts are resolved before the first image is made, so an unknown
    wildcard is reported before a model loads. With a variation seed the images of a
    batch share the seed (see :func:`~sdstudio.engine.variation_noise.image_seeds`),
    and so their prompts.
    """
    request = request.with_seed_resolved()
    wildcards = Wildcards(list(folders))
    seeds = image_seeds(request)
    prompts = [resolved_prompts(request, seed, wildcards) for seed, _ in seeds]
    for index, ((seed, variation), (prompt, negative)) in enumerate(
        zip(seeds, prompts, strict=True)
    ):
        one = request.replace(
            prompt=prompt,
            negative_prompt=negative,
            seed=seed,
            variation_seed=variation,
            batch_size=1,
        )
        one.check_prompts()
        report = _in_batch(on_progress, index, request.batch_size)
        for result in run(one, on_progress=report):
            made = result.record.request
            record = dataclasses.replace(
                result.record,
                request=made.replace(
                    prompt=request.prompt, negative_prompt=request.negative_prompt
                ),
                extra={**result.record.extra, RECORD_KEY: record_value(prompt, negative)},
            )
            yield dataclasses.replace(result, record=record)


def check_pass_prompts(request: GenerationRequest) -> None:
    """Refuse wildcards in the hires pass's and the detailer's own prompts, which are
    used as written (empty, they are the image's resolved prompts)."""
    for part, label in ((request.hires, "hires"), (request.detailer, "detailer")):
        if part is not None and has_wildcards(part.prompt, part.negative_prompt):
            raise InvalidRequest(
                f"Wildcards and variants are resolved in the prompt and the negative prompt "
                f"only; the {label} prompt is used as written. Leave it empty to use the "
                "image's resolved prompt."
            )


def record_value(prompt: str, negative: str) -> dict[str, str]:
    """What ``extra["wildcards"]`` holds: the prompts the image was made with."""
    return {"prompt": prompt, "negative_prompt": negative}


def resolved_of(extra: dict[str, Any] | None) -> tuple[str, str] | None:
    """The resolved prompt and negative prompt an image's record extra holds, if any."""
    value = (extra or {}).get(RECORD_KEY)
    if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
        return None
    negative = value.get("negative_prompt")
    return value["prompt"], negative if isinstance(negative, str) else ""


def _in_batch(
    on_progress: Callable[[Progress], None] | None, index: int, batch_size: int
) -> Callable[[Progress], None] | None:
    """Progress of a batch-1 run reported as that of image ``index`` of the batch."""
    if on_progress is None:
        return None
    report = on_progress

    def forward(progress: Progress) -> None:
        report(dataclasses.replace(progress, image_index=index, batch_size=batch_size))

    return forward
