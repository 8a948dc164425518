"""The detail pass: each face found is repainted at full resolution and pasted back, so
pixels away from the faces stay the image's; it runs after the first (and hires) pass,
counts its steps in the progress, says what it does, stops when cancelled, and
re-runs exactly.

The faces come from a detector given fixed boxes: the tiny models' random pictures hold
no face a real detector would find."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import GenerationCancelled, InvalidRequest
from sdstudio.engine.generation import CancelToken, Engine, Progress
from sdstudio.engine.inpaint import blur_mask
from sdstudio.engine.refine.detailer import (
    chosen_faces,
    face_mask,
    face_prompts,
    grown_box,
    skipped,
)
from sdstudio.engine.refine.detailer_settings import Detailer
from sdstudio.engine.refine.face_detection import Detection
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode

LEFT = Detection(12, 16, 28, 32, 0.6)
RIGHT = Detection(90, 50, 110, 74, 0.9)


class FixedFaces:
    """A detector that finds the faces it is given (those at least as sure as asked)
    and remembers the images it looked at."""

    name = "face"

    def __init__(self, *faces: Detection) -> None:
        self.faces = faces
        self.seen: list[Image.Image] = []

    def detect(self, image: Image.Image, confidence: float) -> list[Detection]:
        self.seen.append(image.copy())
        return sorted((f for f in self.faces if f.score >= confidence), key=lambda f: f.x0)


def engine_with(manager, tmp_path: Path, detector: FixedFaces) -> Engine:
    return Engine(manager, tmp_path / "inputs", detectors=lambda _name: detector)


DETAILER = Detailer(denoise=0.5)


def request_for(model: Path, detailer: Detailer | None = DETAILER, **changes):
    values: dict[str, object] = {
        "model": str(model),
        "prompt": "a portrait",
        "sampler": "Euler",
        "schedule": "Automatic",
        "steps": 4,
        "seed": 21,
        "width": 128,
        "height": 96,
        "detailer": detailer,
    }
    return GenerationRequest(**{**values, **changes})  # type: ignore[arg-type]


def generate(engine: Engine, request: GenerationRequest, cancel: CancelToken | None = None):
    events: list[Progress] = []
    statuses: list[str] = []
    [result] = engine.generate(
        request, on_progress=events.append, on_status=statuses.append, cancel=cancel
    )
    return result, events, statuses


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def blurred_masks(size: tuple[int, int], detailer: Detailer, *faces: Detection) -> np.ndarray:
    """Where the faces' blurred masks reach (the only pixels a detail pass may change)."""
    reach = np.zeros((size[1], size[0]), dtype=bool)
    for face in faces:
        mask = face_mask(size, face, detailer.dilate)
        assert mask is not None
        reach |= np.asarray(blur_mask(mask, detailer.mask_blur)) > 0
    return reach


def test_faces_are_repainted_and_everything_away_from_them_is_kept(
    manager, tmp_path: Path, tiny_model: Path
) -> None:
    detector = FixedFaces(LEFT, RIGHT)
    engine = engine_with(manager, tmp_path, detector)
    plain, _events, _statuses = generate(engine, request_for(tiny_model, None))
    detailed, events, statuses = generate(engine, request_for(tiny_model))

    before, after = pixels(plain.image), pixels(detailed.image)
    reach = blurred_masks((128, 96), Detailer(denoise=0.5), LEFT, RIGHT)
    assert reach.mean() < 0.3  # most of the picture is away from the faces
    assert np.array_equal(before[~reach], after[~reach])
    for face in (LEFT, RIGHT):  # each face itself was repainted
        x0, y0, x1, y1 = face.box
        assert np.abs(before[y0:y1, x0:x1] - after[y0:y1, x0:x1]).mean() > 1

    # The detector looked at the finished first pass.
    [seen] = detector.seen
    assert np.array_equal(pixels(seen), before)
    # 4 steps, then 2 per face (4 at strength 0.5), counted on.
    assert [(p.step, p.total) for p in events] == [
        (1, 4), (2, 4), (3, 4), (4, 4), (5, 8), (6, 8), (7, 8), (8, 8),
    ]  # fmt: skip
    assert statuses == ["Detailing face 1 of 2…", "Detailing face 2 of 2…"]
    assert detailed.record.extra["detailer"] == {
        "faces": 2,
        "found": 2,
        "boxes": [[12, 16, 28, 32, 0.6], [90, 50, 110, 74, 0.9]],
    }
    assert detailed.record.request.detailer == Detailer(denoise=0.5)


def test_a_detailed_image_is_made_again_exactly(manager, tmp_path: Path, tiny_model: Path) -> None:
    engine = engine_with(manager, tmp_path, FixedFaces(LEFT, RIGHT))
    first, _events, _statuses = generate(engine, request_for(tiny_model))
    again, _events, _statuses = generate(engine, first.record.request)
    assert np.array_equal(pixels(first.image), pixels(again.image))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_the_detailer_prompt_and_confidence_are_used(
    manager, tmp_path: Path, tiny_model: Path
) -> None:
    engine = engine_with(manager, tmp_path, FixedFaces(LEFT, RIGHT))
    same, _events, _statuses = generate(engine, request_for(tiny_model))
    own = Detailer(denoise=0.5, prompt="a smiling face, [PROMPT]", negative_prompt="blurry")
    other, _events, _statuses = generate(engine, request_for(tiny_model, own))
    assert not np.array_equal(pixels(same.image), pixels(other.image))

    # Only the surer face passes a confidence of 0.7; [SKIP] leaves a face as it is.
    sure, _events, statuses = generate(engine, request_for(tiny_model, Detailer(confidence=0.7)))
    assert statuses == ["Detailing face 1 of 1…"]
    assert sure.record.extra["detailer"]["found"] == 1
    skipping = Detailer(denoise=0.5, prompt="[SKIP] [SEP] [PROMPT]")
    skip, _events, statuses = generate(engine, request_for(tiny_model, skipping))
    assert statuses == ["Detailing face 1 of 1…"]
    assert skip.record.extra["detailer"] == {**same.record.extra["detailer"], "faces": 1}
    left = blurred_masks((128, 96), skipping, LEFT)
    assert np.array_equal(pixels(skip.image)[left], pixels(generate(
        engine, request_for(tiny_model, None))[0].image)[left])  # fmt: skip


def test_no_face_keeps_the_image_and_says_so(manager, tmp_path: Path, tiny_model: Path) -> None:
    engine = engine_with(manager, tmp_path, FixedFaces())
    plain, _events, _statuses = generate(engine, request_for(tiny_model, None))
    kept, events, statuses = generate(engine, request_for(tiny_model))
    assert np.array_equal(pixels(plain.image), pixels(kept.image))
    assert len(events) == 4
    assert statuses == ["Detailer: no face found (confidence 0.3); the image is kept as it is."]
    assert kept.record.extra["detailer"] == {"faces": 0, "found": 0, "boxes": []}


def test_the_detail_pass_follows_the_hires_pass(manager, tmp_path: Path, tiny_model: Path) -> None:
    """The faces are found in the hires pass's image, at its size (here beyond the first
    pass's), and repainted at the request's size."""
    far = Detection(150, 110, 190, 150, 0.8)
    detector = FixedFaces(far)
    engine = engine_with(manager, tmp_path, detector)
    hires = HiresFix(upscaler="Lanczos", steps=2, denoise=0.5)
    plain, _events, _statuses = generate(engine, request_for(tiny_model, None, hires=hires))
    detailed, events, statuses = generate(engine, request_for(tiny_model, hires=hires))
    assert detailed.image.size == (256, 192) == detector.seen[0].size
    reach = blurred_masks((256, 192), Detailer(denoise=0.5), far)
    before, after = pixels(plain.image), pixels(detailed.image)
    assert np.array_equal(before[~reach], after[~reach])
    assert not np.array_equal(before[reach], after[reach])
    # The faces' steps are counted on once they are found.
    assert [(p.step, p.total, p.hires) for p in events][-3:] == [
        (6, 6, True), (7, 8, False), (8, 8, False),
    ]  # fmt: skip
    assert statuses[-1] == "Detailing face 1 of 1…"


def test_img2img_is_detailed_and_inpainting_only_within_its_mask(
    manager, tmp_path: Path, tiny_model: Path
) -> None:
    source = tmp_path / "source.png"
    noise = np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(source)
    mask = tmp_path / "mask.png"
    painted = Image.new("L", (128, 96), 0)
    painted.paste(255, (86, 46, 114, 78))  # over the right face only
    painted.save(mask)
    engine = engine_with(manager, tmp_path, FixedFaces(LEFT, RIGHT))
    image_to_image = {"mode": Mode.IMG2IMG, "init_image": str(source), "strength": 0.5}
    plain, _events, _statuses = generate(engine, request_for(tiny_model, None, **image_to_image))
    detailed, _events, statuses = generate(engine, request_for(tiny_model, **image_to_image))
    assert not np.array_equal(pixels(plain.image), pixels(detailed.image))
    assert statuses[-1] == "Detailing face 2 of 2…"

    inpainting = {**image_to_image, "mode": Mode.INPAINT, "mask": str(mask)}
    plain, _events, _statuses = generate(engine, request_for(tiny_model, None, **inpainting))
    detailed, _events, statuses = generate(engine, request_for(tiny_model, **inpainting))
    assert statuses[-1] == "Detailing face 1 of 1…"
    left = blurred_masks((128, 96), Detailer(denoise=0.5), LEFT)
    assert np.array_equal(pixels(plain.image)[left], pixels(detailed.image)[left])
    assert detailed.record.extra["detailer"]["boxes"] == [[90, 50, 110, 74, 0.9]]


def test_cancelling_stops_within_a_face_and_between_faces(
    manager, tmp_path: Path, tiny_model: Path
) -> None:
    engine = engine_with(manager, tmp_path, FixedFaces(LEFT, RIGHT))
    within = CancelToken()
    seen: list[int] = []

    def cancel_in_the_first_face(progress: Progress) -> None:
        seen.append(progress.step)
        if progress.step == 5:
            within.cancel()

    with pytest.raises(GenerationCancelled):
        list(engine.generate(request_for(tiny_model), on_progress=cancel_in_the_first_face,
                             cancel=within))  # fmt: skip
    assert seen == [1, 2, 3, 4, 5]

    between = CancelToken()
    seen.clear()

    def cancel_at_the_second_face(message: str) -> None:
        if message.startswith("Detailing face 2"):
            between.cancel()

    with pytest.raises(GenerationCancelled):
        list(engine.generate(request_for(tiny_model), on_progress=lambda p: seen.append(p.step),
                             on_status=cancel_at_the_second_face, cancel=between))  # fmt: skip
    assert seen == [1, 2, 3, 4, 5, 6]


def test_unusable_detailers_are_refused_before_a_model_loads(
    tmp_path: Path, tiny_model: Path
) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    manager = PipelineManager(choose_device("cpu"))
    engine = Engine(manager, tmp_path / "inputs")
    yolo = request_for(tiny_model, Detailer(detector="face_yolov8n.pt"))
    with pytest.raises(InvalidRequest, match="needs the ultralytics library"):
        list(engine.generate(yolo))
    too_little = request_for(tiny_model, Detailer(denoise=0.2), steps=4)
    with pytest.raises(InvalidRequest, match=r"0\.2 with 4 steps leaves no denoising step"):
        list(engine.generate(too_little))
    long_prompt = request_for(tiny_model, Detailer(prompt="word " * 5000))
    with pytest.raises(InvalidRequest, match="detailer prompt"):
        list(engine.generate(long_prompt))
    assert manager.model is None


@pytest.mark.parametrize("dilate", [0, 1, 2, 3, 4, 7, -1, -3, -4, -6])
@pytest.mark.parametrize("box", [(20, 15, 40, 33), (0, 0, 12, 9), (50, 30, 64, 48)])
def test_masks_grow_and_shrink_as_opencv_dilates_and_erodes(
    dilate: int, box: tuple[int, int, int, int]
) -> None:
    """ADetailer grows its masks with OpenCV; the boxes are grown to the same pixels."""
    import cv2

    size = (64, 48)
    drawn = np.zeros((48, 64), dtype=np.uint8)
    drawn[box[1] : box[3], box[0] : box[2]] = 255
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (abs(dilate) or 1, abs(dilate) or 1))
    if dilate > 0:
        expected = cv2.dilate(drawn, kernel, iterations=1)
    elif dilate < 0:
        expected = cv2.erode(drawn, kernel, iterations=1)
    else:
        expected = drawn
    mask = face_mask(size, Detection(*box, 1.0), dilate)
    assert mask is not None
    assert np.array_equal(np.asarray(mask), expected)


def test_a_box_shrunk_away_leaves_nothing() -> None:
    assert grown_box((10, 10, 13, 13), -8, (64, 64)) is None


def test_face_prompts_read_adetailers_words() -> None:
    assert face_prompts("", "a cat") == ["a cat"]
    assert face_prompts("detailed, [PROMPT]", "a cat") == ["detailed, a cat"]
    assert face_prompts("a [SEP]  [SEP] [SKIP]", "a cat") == ["a", "a cat", "[SKIP]"]
    assert skipped(" [SKIP] ") and not skipped("[SKIP] eyes")


def test_the_largest_faces_are_kept_and_those_outside_an_inpainting_mask_left() -> None:
    small = Detection(0, 0, 10, 10, 0.9)
    big = Detection(50, 0, 90, 40, 0.5)
    middle = Detection(20, 0, 40, 20, 0.7)
    assert chosen_faces([big, small, middle], 2) == [middle, big]
    assert chosen_faces([big, small, middle], 0) == [small, middle, big]
    mask = Image.new("L", (100, 50), 0)
    mask.paste(255, (5, 5, 8, 8))
    assert chosen_faces([big, small, middle], 0, within=mask) == [small]
