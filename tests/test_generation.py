"""The engine runs the real diffusers pipelines: modes, seeds, progress, cancel, models."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import GenerationCancelled, InvalidRequest, ModelError
from sdstudio.engine.generation import CancelToken, Engine, Progress
from sdstudio.engine.request import GenerationRequest, Mode


def request_for(model: Path, **changes) -> GenerationRequest:
    values = {"prompt": "a red boat", "steps": 4, "width": 64, "height": 64, "seed": 11}
    values.update(changes)
    return GenerationRequest(model=str(model), **values)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def size_of(path: str | None) -> tuple[int, int]:
    with Image.open(path or "") as image:
        return image.size


def test_txt2img_reports_every_step_with_a_preview(engine: Engine, tiny_model: Path) -> None:
    events: list[Progress] = []
    results = list(engine.generate(request_for(tiny_model, steps=5), on_progress=events.append))
    assert [(e.step, e.total) for e in events] == [(i, 5) for i in range(1, 6)]
    assert all(e.preview is not None and e.preview.size == (8, 8) for e in events)
    [result] = results
    assert result.image.size == (64, 64)
    assert result.record.request.seed == 11
    assert result.record.model_name == "tiny-sd"


def test_same_request_gives_identical_pixels(engine: Engine, tiny_model: Path) -> None:
    request = request_for(tiny_model, sampler="Euler a", schedule="Automatic")
    first = next(engine.generate(request)).image
    second = next(engine.generate(request)).image
    other_seed = next(engine.generate(request.replace(seed=12))).image
    assert np.array_equal(pixels(first), pixels(second))
    assert not np.array_equal(pixels(first), pixels(other_seed))


def test_random_seed_is_drawn_and_recorded(engine: Engine, tiny_model: Path) -> None:
    result = next(engine.generate(request_for(tiny_model, seed=-1)))
    seed = result.record.request.seed
    assert seed >= 0
    again = next(engine.generate(request_for(tiny_model, seed=seed)))
    assert np.array_equal(pixels(result.image), pixels(again.image))


def test_batch_images_can_each_be_rerun_alone(engine: Engine, tiny_model: Path) -> None:
    events: list[Progress] = []
    batch = list(
        engine.generate(request_for(tiny_model, batch_size=3, seed=100), on_progress=events.append)
    )
    assert [r.record.request.seed for r in batch] == [100, 101, 102]
    assert all(r.record.request.batch_size == 1 for r in batch)
    assert [e.image_index for e in events] == [0] * 4 + [1] * 4 + [2] * 4
    alone = next(engine.generate(batch[1].record.request))
    assert np.array_equal(pixels(alone.image), pixels(batch[1].image))


def test_img2img_runs_strength_times_steps(
    engine: Engine, tiny_model: Path, init_image: Path
) -> None:
    events: list[Progress] = []
    request = request_for(
        tiny_model, mode=Mode.IMG2IMG, init_image=str(init_image), steps=10, strength=0.5
    )
    [result] = engine.generate(request, on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4, 5]
    assert {e.total for e in events} == {5}
    assert result.image.size == (64, 64)
    stored = Path(result.record.request.init_image or "")
    assert stored.parent == engine.inputs_dir
    assert size_of(str(stored)) == (64, 64)
    weaker = next(engine.generate(request.replace(strength=0.3)))
    assert not np.array_equal(pixels(result.image), pixels(weaker.image))


def test_inpaint_keeps_the_unmasked_area_closer(
    engine: Engine, tiny_model: Path, init_image: Path, mask_image: Path
) -> None:
    statuses: list[str] = []
    request = request_for(
        tiny_model,
        mode=Mode.INPAINT,
        init_image=str(init_image),
        mask=str(mask_image),
        steps=4,
        strength=1.0,
        width=80,
        height=72,
    )
    [result] = engine.generate(request, on_status=statuses.append)
    assert result.image.size == (80, 72)
    assert Path(result.record.request.mask or "").exists()
    assert not any("resized" in s for s in statuses)


def test_mask_of_another_size_is_resized_with_a_notice(
    engine: Engine, tiny_model: Path, init_image: Path, tmp_path: Path
) -> None:
    small_mask = tmp_path / "small-mask.png"
    Image.new("L", (40, 36), 255).save(small_mask)
    statuses: list[str] = []
    request = request_for(
        tiny_model,
        mode=Mode.INPAINT,
        init_image=str(init_image),
        mask=str(small_mask),
        strength=1.0,
    )
    [result] = engine.generate(request, on_status=statuses.append)
    assert "The mask (40x36) was resized to match the init image (80x72)." in statuses
    assert size_of(result.record.request.mask) == (64, 64)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_inpainting_model_serves_every_mode(
    engine: Engine, tiny_inpainting_model: Path, init_image: Path, mask_image: Path
) -> None:
    txt = next(engine.generate(request_for(tiny_inpainting_model)))
    assert engine.pipelines.model is not None and engine.pipelines.model.inpainting
    img = next(
        engine.generate(
            request_for(
                tiny_inpainting_model, mode=Mode.IMG2IMG, init_image=str(init_image), strength=0.5
            )
        )
    )
    inp = next(
        engine.generate(
            request_for(
                tiny_inpainting_model,
                mode=Mode.INPAINT,
                init_image=str(init_image),
                mask=str(mask_image),
            )
        )
    )
    assert txt.image.size == img.image.size == inp.image.size == (64, 64)


@pytest.mark.slow
def test_every_sampler_generates_reproducibly(engine: Engine, tiny_model: Path) -> None:
    from sdstudio.engine import samplers

    for name in samplers.sampler_names():
        schedule = samplers.get_sampler(name).default_schedule
        request = request_for(tiny_model, sampler=name, schedule=schedule, steps=3)
        first = next(engine.generate(request)).image
        second = next(engine.generate(request)).image
        assert np.array_equal(pixels(first), pixels(second)), name


def test_cancel_from_another_thread_stops_within_one_step(engine: Engine, tiny_model: Path) -> None:
    token = CancelToken()
    steps_seen: list[int] = []
    cancelled_at: list[int] = []
    decoded = threading.Event()
    vae = engine.pipelines.pipeline(str(tiny_model), Mode.TXT2IMG).vae
    original_decode = vae.decode

    def watch_decode(*args, **kwargs):
        decoded.set()
        return original_decode(*args, **kwargs)

    def on_progress(progress: Progress) -> None:
        steps_seen.append(progress.step)
        if progress.step == 3:
            canceller = threading.Thread(target=token.cancel)
            canceller.start()
            canceller.join()
            cancelled_at.append(progress.step)

    vae.decode = watch_decode
    try:
        with pytest.raises(GenerationCancelled):
            list(
                engine.generate(
                    request_for(tiny_model, steps=20), on_progress=on_progress, cancel=token
                )
            )
    finally:
        del vae.decode
    assert cancelled_at == [3]
    assert steps_seen == [1, 2, 3]
    assert not decoded.is_set()


def test_cancel_before_start_runs_nothing(engine: Engine, tiny_model: Path) -> None:
    token = CancelToken()
    token.cancel()
    events: list[Progress] = []
    with pytest.raises(GenerationCancelled):
        list(engine.generate(request_for(tiny_model), on_progress=events.append, cancel=token))
    assert events == []


def test_bad_sampler_is_refused_before_loading(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="Unknown sampler 'Nope'"):
        list(engine.generate(request_for(tmp_path / "no-model", sampler="Nope")))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "is not a diffusers model folder"),
        (lambda d: (d / "m.ckpt").write_bytes(b"x") and d / "m.ckpt", "is a pickle checkpoint"),
        (lambda d: (d / "m.txt").write_text("x") and d / "m.txt", "is not a model"),
        (
            lambda d: (d / "m.safetensors").write_bytes(b"x") and d / "m.safetensors",
            "is truncated or damaged",
        ),
    ],
)
def test_bad_models_give_clear_errors(engine: Engine, tmp_path: Path, make, message) -> None:
    with pytest.raises(ModelError, match=message):
        list(engine.generate(request_for(make(tmp_path))))


def test_truncated_model_weights_give_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path / "inputs")
    with pytest.raises(ModelError, match="Could not load the model broken"):
        list(engine.generate(request_for(broken)))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_switching_models_frees_the_old_weights(
    tiny_model: Path, tiny_inpainting_model: Path, tmp_path: Path
) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    manager = PipelineManager(choose_device("cpu"))
    engine = Engine(manager, tmp_path / "inputs")
    next(engine.generate(request_for(tiny_model)))
    img2img = manager.pipeline(str(tiny_model), Mode.IMG2IMG)
    assert img2img.unet is manager.pipeline(str(tiny_model), Mode.TXT2IMG).unet
    old_unet = weakref.ref(img2img.unet)
    del img2img
    next(engine.generate(request_for(tiny_inpainting_model)))
    gc.collect()
    assert old_unet() is None
    manager.unload()
    assert manager.model is None


def test_single_file_checkpoint_loads_with_a_config_folder(
    tiny_model: Path, tmp_path: Path
) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager
    from sdstudio.testing.checkpoints import save_single_file_checkpoint

    checkpoint = save_single_file_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    manager = PipelineManager(choose_device("cpu"), single_file_config=tiny_model)
    engine = Engine(manager, tmp_path / "inputs")
    from_file = next(engine.generate(request_for(checkpoint)))
    assert manager.model is not None and manager.model.single_file
    assert from_file.record.model_hash == manager.model_hash() and len(manager.model_hash()) == 10
    from_folder = next(
        Engine(PipelineManager(choose_device("cpu")), tmp_path).generate(request_for(tiny_model))
    )
    assert np.array_equal(pixels(from_file.image), pixels(from_folder.image))


def test_folder_with_only_fp16_weights_loads(tmp_path: Path) -> None:
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager, weights_variant
    from sdstudio.testing import build_tiny_pipeline
    from sdstudio.testing.vocab import write_tiny_clip_tokenizer

    folder = tmp_path / "fp16-only"
    build_tiny_pipeline().save_pretrained(folder, variant="fp16")
    write_tiny_clip_tokenizer(folder / "tokenizer")
    assert weights_variant(folder) == "fp16"
    engine = Engine(PipelineManager(choose_device("cpu")), tmp_path / "inputs")
    [result] = engine.generate(request_for(folder))
    assert result.image.size == (64, 64)
