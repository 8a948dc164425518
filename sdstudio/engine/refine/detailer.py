"""The detail pass (ADetailer's job): find the faces in a finished image and repaint
each at full resolution, as ADetailer does it in AUTOMATIC1111.

For each face, left to right:

- its mask is its box grown (or shrunk) by ``dilate`` as ADetailer's "dilate erode"
  grows it (OpenCV's dilation by a square of that many pixels), then blurred by
  ``mask_blur``;
- the region repainted is the mask's box with ``padding`` pixels around it, widened to
  the request's shape, cut out and scaled to the request's size: A1111's "Only masked"
  inpainting (:func:`sdstudio.engine.inpaint.masked_crop`), on the inpainting pipeline
  of the same model, from the picture as it is ("original" masked content);
- it is repainted with the denoising strength ``denoise`` over the image's steps (or
  the detailer's own), with the image's sampler, schedule type and CFG scale, the
  detailer's prompts (see :mod:`sdstudio.engine.refine.detailer_settings` for ``[PROMPT]``,
  ``[SEP]`` and ``[SKIP]``) and, as ADetailer seeds it, the image's seed plus the
  face's number (0 for the first);
- the result is pasted back through the blurred mask, so every pixel outside it is
  the picture's, and the next face is repainted on the picture with this one done.

With inpainting, only the faces that touch the inpainted area are repainted: the
rest of the picture was asked to stay as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sdstudio.engine import samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.families import ModelFamily
from sdstudio.engine.inpaint import Box, blur_mask, masked_crop, paste_back
from sdstudio.engine.mode_arguments import takes_size
from sdstudio.engine.progress import StepReporter
from sdstudio.engine.prompts import check_prompt_length
from sdstudio.engine.refine.detailer_settings import Detailer
from sdstudio.engine.refine.face_detection import Detection, FaceDetector, sort_left_to_right
from sdstudio.engine.request import MAX_SEED, GenerationRequest

_SEP = re.compile(r"\s*\[SEP\]\s*")
_SKIP = re.compile(r"\s*\[SKIP\]\s*")


@dataclass(frozen=True, slots=True)
class DetailResult:
    """What a detail pass did to one image."""

    found: tuple[Detection, ...]
    """The faces found (after the confidence and the limit), left to right."""
    repainted: int
    """How many of them were repainted (``[SKIP]`` leaves some)."""

    def record(self) -> dict[str, Any]:
        """The image record's ``detailer`` entry."""
        return {
            "faces": self.repainted,
            "found": len(self.found),
            "boxes": [face.to_list() for face in self.found],
        }


def check_detailer(request: GenerationRequest) -> None:
    """Refuse, before any model loads, a detail pass that cannot run: one whose
    denoising strength leaves no step, or whose prompts are over the length limit."""
    detailer = request.detailer
    if detailer is None:
        return
    steps = detailer.steps or request.steps
    if int(steps * detailer.denoise) < 1:
        raise InvalidRequest(
            f"A detailer denoising strength of {detailer.denoise:g} with {steps} steps leaves "
            "no denoising step; raise the strength or the detailer's steps."
        )
    check_prompt_length(detailer.prompt, "detailer prompt")
    check_prompt_length(detailer.negative_prompt, "detailer negative prompt")


def face_prompts(template: str, image_prompt: str) -> list[str]:
    """The prompt of each face, as ADetailer reads its prompt box: ``[SEP]`` separates
    the faces' prompts, an empty one is the image's prompt, ``[PROMPT]`` stands for it."""
    return [
        part.replace("[PROMPT]", image_prompt) if part else image_prompt
        for part in _SEP.split(template)
    ]


def skipped(prompt: str) -> bool:
    """Whether a face's prompt says to leave it as it is (ADetailer's ``[SKIP]``)."""
    return _SKIP.fullmatch(prompt) is not None


def grown_box(box: Box, dilate: int, size: tuple[int, int]) -> Box | None:
    """A box grown (``dilate`` > 0) or shrunk (< 0) as OpenCV dilates or erodes a filled
    rectangle with a ``|dilate|``-pixel square (ADetailer's "dilate erode"): by
    ``k - 1 - k // 2`` pixels on the left and top and ``k // 2`` on the right and bottom,
    the other way round when shrinking (not from the picture's edges). Kept within
    ``size``; ``None`` when nothing is left."""
    x0, y0, x1, y1 = box
    k = abs(dilate)
    before, after = (k - 1 - k // 2, k // 2) if k else (0, 0)
    if dilate > 0:
        x0, y0, x1, y1 = x0 - before, y0 - before, x1 + after, y1 + after
    elif dilate < 0:  # OpenCV's erosion sees white beyond the picture's edges
        width, height = size
        x0, y0 = (x0 + after if x0 > 0 else 0), (y0 + after if y0 > 0 else 0)
        x1, y1 = (x1 - before if x1 < width else x1), (y1 - before if y1 < height else y1)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(size[0], x1), min(size[1], y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def face_mask(size: tuple[int, int], face: Detection, dilate: int) -> Image.Image | None:
    """The face's mask (``L``, white = repaint) at the picture's ``size``, before blurring;
    ``None`` when shrinking leaves nothing."""
    box = grown_box(face.box, dilate, size)
    if box is None:
        return None
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def chosen_faces(
    found: Sequence[Detection], max_faces: int, within: Image.Image | None = None
) -> list[Detection]:
    """The faces to repaint: the ``max_faces`` largest (0: all; ADetailer's "mask only
    top k"), only those that touch ``within`` (an inpainting mask) when given, left to
    right."""
    faces = list(found)
    if within is not None:
        faces = [face for face in faces if within.crop(face.box).getbbox() is not None]
    if max_faces:
        faces = sorted(faces, key=lambda face: -face.area)[:max_faces]
    return sort_left_to_right(faces)


class DetailPass:
    """The detail pass of a request on the loaded model's inpainting pipeline.

    ``prompts`` gives the pipeline's prompt arguments for a prompt and a negative
    prompt, ``call`` runs the pipeline on its arguments (at a width and height, for
    messages), ``networks`` switches on the LoRAs and embeddings two prompts name.
    """

    def __init__(
        self,
        request: GenerationRequest,
        detector: FaceDetector,
        pipe: Any,
        family: ModelFamily,
        scheduler_config: dict[str, Any],
        *,
        prompts: Callable[[str, str], dict[str, Any]],
        call: Callable[[dict[str, Any], int, int], Any],
        networks: Callable[[str, str], Any] | None = None,
    ) -> None:
        assert request.detailer is not None
        self.settings: Detailer = request.detailer
        self.request = request
        self.detector = detector
        self.pipe = pipe
        self.family = family
        self.scheduler_config = scheduler_config
        self._prompts = prompts
        self._call = call
        self._networks = networks
        self.prompts = face_prompts(self.settings.prompt, request.prompt)
        self.negatives = face_prompts(self.settings.negative_prompt, request.negative_prompt)
        self.switched = False
        """Whether a pass before it may have switched on other networks (a hires pass
        with prompts of its own): its own are switched on again before the faces."""

    def prompts_of(self, number: int) -> tuple[str, str]:
        """The prompt and negative prompt of face ``number`` (0: the first); the last of
        each serves the faces after it."""
        prompts, negatives = self.prompts, self.negatives
        return prompts[min(number, len(prompts) - 1)], negatives[min(number, len(negatives) - 1)]

    @property
    def own_prompts(self) -> list[tuple[str, str]]:
        """The faces' prompts that differ from the image's (and may name other LoRAs),
        each once."""
        first = (self.request.prompt, self.request.negative_prompt)
        count = max(len(self.prompts), len(self.negatives))
        pairs = dict.fromkeys(self.prompts_of(number) for number in range(count))
        return [pair for pair in pairs if pair != first]

    def steps_per_face(self) -> int:
        """The denoising steps one face takes (those the strength selects)."""
        steps = self.settings.steps or self.request.steps
        return max(1, int(steps * self.settings.denoise))

    def run(
        self,
        image: Image.Image,
        seed: int,
        steps: StepReporter,
        on_status: Callable[[str], None] | None = None,
        within: Image.Image | None = None,
    ) -> tuple[Image.Image, DetailResult]:
        """The image with its faces repainted, and what was done.

        ``within`` (an inpainting mask at the image's size) limits the faces to those
        that touch it. No face found keeps the image as it is, and says so.
        """
        settings = self.settings
        steps.raise_if_cancelled()
        found = self.detector.detect(image.convert("RGB"), settings.confidence)
        faces = chosen_faces(found, settings.max_faces, within)
        if not faces:
            if on_status:
                where = " in the inpainted area" if within is not None and found else ""
                on_status(
                    f"Detailer: no face found{where} (confidence {settings.confidence:g}); "
                    "the image is kept as it is."
                )
            return image, DetailResult((), 0)
        todo = [
            (number, face)
            for number, face in enumerate(faces)
            if not skipped(self.prompts_of(number)[0])
        ]
        first = (self.request.prompt, self.request.negative_prompt)
        active = None if self.switched else first
        per_face = self.steps_per_face()
        for done, (number, face) in enumerate(todo):
            if on_status:
                on_status(f"Detailing face {done + 1} of {len(todo)}…")
            steps.raise_if_cancelled()
            prompts = self.prompts_of(number)
            if self._networks is not None and prompts != active:
                self._networks(*prompts)  # the LoRAs and embeddings of this face's prompts
                active = prompts
            later = (len(todo) - done - 1) * per_face
            image = self._repaint(image, face, number, seed, steps, later)
        if self._networks is not None and active not in (first, None):
            self._networks(*first)  # the next image's first pass takes its own again
        return image, DetailResult(tuple(faces), len(todo))

    def _repaint(
        self,
        image: Image.Image,
        face: Detection,
        number: int,
        seed: int,
        steps: StepReporter,
        later: int,
    ) -> Image.Image:
        """The picture with one face repainted and pasted back through its blurred mask."""
        import torch

        settings, request = self.settings, self.request
        mask = face_mask(image.size, face, settings.dilate)
        if mask is None:
            return image
        overlay = blur_mask(mask, settings.mask_blur)
        size = (request.width, request.height)
        box, crop, crop_mask = masked_crop(image.convert("RGB"), overlay, settings.padding, size)
        face_seed = (seed + number) % (MAX_SEED + 1)
        prompt, negative = self.prompts_of(number)
        pipe = self.pipe
        pipe.scheduler = samplers.make_scheduler(
            request.sampler, request.schedule, self.scheduler_config, seed=face_seed
        )
        kwargs: dict[str, Any] = {
            **self._prompts(prompt, negative),
            **self.family.guidance_arguments(
                pipe, request.guidance_scale, request.distilled_guidance
            ),
            "num_inference_steps": settings.steps or request.steps,
            "generator": torch.Generator("cpu").manual_seed(face_seed),
            "callback_on_step_end": steps.callback(*size, later=later),
            "output_type": "pil",
            "image": crop,
            "mask_image": crop_mask,
            "strength": settings.denoise,
        }
        if takes_size(pipe):
            kwargs.update(width=size[0], height=size[1])
        result: Image.Image = self._call(kwargs, *size).images[0]
        return paste_back(image.convert("RGB"), result, overlay, box)
