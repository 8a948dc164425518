"""The hires fix: a second pass at twice the size on the same model, counted in the
progress, cancellable, re-run exactly from its record, written and read under A1111's
names, and run from the command line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdstudio.cli import main
from sdstudio.engine.errors import GenerationCancelled, InvalidRequest, ModelError
from sdstudio.engine.families import family
from sdstudio.engine.generation import CancelToken, Engine, Progress
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.refine.hires import plan_hires, selecting_strength
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode


def request_for(model: Path | str, hires: HiresFix | None, **changes: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "model": str(model),
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "sampler": "Euler",
        "schedule": "Automatic",
        "steps": 3,
        "seed": 11,
        "width": 64,
        "height": 64,
        "hires": hires,
    }
    return GenerationRequest(**{**fields, **changes})  # type: ignore[arg-type]


def run(engine: Engine, request: GenerationRequest) -> tuple[list, list[Progress], list[str]]:
    events: list[Progress] = []
    statuses: list[str] = []
    images = list(engine.generate(request, on_progress=events.append, on_status=statuses.append))
    return images, events, statuses


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(
    "hires",
    [
        HiresFix(
            upscaler="Latent",
            steps=2,
            denoise=0.5,
            sampler="DPM++ 2M",
            schedule="Karras",
            prompt="a lighthouse, sharp",
            guidance_scale=5.0,
        ),
        HiresFix(upscaler="Lanczos", denoise=0.6),
    ],
    ids=["latent", "lanczos"],
)
def test_a_hires_pass_doubles_the_size_counts_its_steps_and_reruns_exactly(
    engine: Engine, tiny_model: Path, hires: HiresFix
) -> None:
    request = request_for(tiny_model, hires)
    [result], events, statuses = run(engine, request)
    assert result.image.size == (128, 128)
    hires_steps = hires.steps or request.steps  # A1111: "Hires steps" are the steps run
    total = request.steps + hires_steps
    assert [(p.step, p.total, p.hires) for p in events] == [
        (step, total, step > request.steps) for step in range(1, total + 1)
    ]
    # Previews of both passes, each at its own size (latents / 8).
    assert {p.preview.size for p in events if p.preview and not p.hires} == {(8, 8)}
    assert {p.preview.size for p in events if p.preview and p.hires} == {(16, 16)}
    step_word = "steps" if hires_steps != 1 else "step"
    assert f"Hires pass: 128x128 with {hires.upscaler}, {hires_steps} {step_word}…" in statuses

    record = result.record
    assert record.request.hires == hires and record.request == request.replace(batch_size=1)
    [again], _, _ = run(engine, record.request)
    assert np.array_equal(pixels(again.image), pixels(result.image))
    # One pass alone makes another image: the hires pass changed it.
    [plain], _, _ = run(engine, request.replace(hires=None, width=128, height=128))
    assert not np.array_equal(pixels(plain.image), pixels(result.image))


def test_latent_and_image_upscalers_make_different_images(engine: Engine, tiny_model: Path) -> None:
    images = {}
    for upscaler in ("Latent", "Latent (nearest)", "Nearest"):
        [result], _, _ = run(engine, request_for(tiny_model, HiresFix(upscaler=upscaler, steps=1)))
        images[upscaler] = pixels(result.image)
    assert not np.array_equal(images["Latent"], images["Latent (nearest)"])
    assert not np.array_equal(images["Latent"], images["Nearest"])


def test_a_resize_of_another_shape_is_covered_and_its_centre_kept(
    engine: Engine, tiny_model: Path
) -> None:
    hires = HiresFix(width=128, height=128, upscaler="Latent", steps=1)
    plan = plan_hires(request_for(tiny_model, hires, height=96), family("sd1"), False)
    assert plan is not None and (plan.width, plan.height, plan.cover) == (128, 128, (128, 192))
    for upscaler in ("Latent", "Lanczos"):
        changed = HiresFix(width=128, height=128, upscaler=upscaler, steps=1)
        [result], _, _ = run(engine, request_for(tiny_model, changed, height=96))
        assert result.image.size == (128, 128)


@pytest.mark.parametrize(
    ("pipeline", "truncating"),
    [
        ("StableDiffusionImg2ImgPipeline", True),
        ("StableDiffusionXLImg2ImgPipeline", True),
        ("StableDiffusion3Img2ImgPipeline", False),
        ("FluxImg2ImgPipeline", False),
        ("ChromaImg2ImgPipeline", False),
        ("ZImageImg2ImgPipeline", False),
        ("QwenImageImg2ImgPipeline", False),
    ],
)
def test_hires_steps_are_the_last_of_a_schedule_lengthened_by_the_denoising(
    pipeline: str, truncating: bool
) -> None:
    """As A1111's ``setup_img2img_steps``: N steps of ``int(N / min(d, 0.999))``, chosen by
    each pipeline's own ``get_timesteps`` from the strength the plan gives it."""
    from types import SimpleNamespace

    import diffusers

    hires = HiresFix(steps=7, denoise=0.3)
    flow = family("flux1") if not truncating else family("sd1")
    plan = plan_hires(request_for("m", hires, width=64, height=64), flow, False)
    assert plan is not None and (plan.steps, plan.schedule_steps) == (7, 23)
    assert plan.strength == selecting_strength(7, 23, truncating=truncating)
    get_timesteps = getattr(diffusers, pipeline).get_timesteps
    scheduler = diffusers.EulerDiscreteScheduler()
    stand_in = SimpleNamespace(scheduler=scheduler)  # the pipeline's own method, its scheduler
    for steps in range(1, 31):
        for denoise in np.arange(0.05, 1.001, 0.05):
            total = int(steps / min(float(denoise), 0.999))
            strength = selecting_strength(steps, total, truncating=truncating)
            scheduler.set_timesteps(total)
            timesteps, count = get_timesteps(stand_in, total, strength, "cpu")
            assert count == steps and 0 < strength <= 1
            assert list(timesteps) == list(scheduler.timesteps[total - steps :])


def test_cancelling_in_the_hires_pass_stops_it(engine: Engine, tiny_model: Path) -> None:
    cancel = CancelToken()

    def on_progress(progress: Progress) -> None:
        if progress.hires:
            cancel.cancel()

    request = request_for(tiny_model, HiresFix(steps=3))
    with pytest.raises(GenerationCancelled):
        list(engine.generate(request, on_progress=on_progress, cancel=cancel))


@pytest.mark.parametrize("name", ["flux", "zimage"])
@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_flow_family_runs_a_latent_hires_pass(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    """Flux's packed latents are unpacked and taken as they are; Z-Image's pipeline takes
    pixels, so its resized latents are decoded first."""
    from sdstudio.testing import tiny_flow

    model = getattr(tiny_flow, f"save_tiny_{name}")(tmp_path_factory.mktemp(name) / name)
    hires = HiresFix(upscaler="Latent", steps=2, denoise=0.6)
    request = request_for(model, hires, steps=2, guidance_scale=1.0, negative_prompt="")
    [result], events, _ = run(engine, request)
    assert result.image.size == (128, 128)
    assert [(p.step, p.total, p.hires) for p in events] == [
        (1, 4, False),
        (2, 4, False),
        (3, 4, True),
        (4, 4, True),
    ]
    [lanczos], _, _ = run(engine, request.replace(hires=HiresFix(upscaler="Lanczos", steps=2)))
    assert lanczos.image.size == (128, 128)


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_what_cannot_run_is_refused_with_a_message(
    engine: Engine, tiny_model: Path, init_image: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match=r"hires upscaler '4x-UltraSharp' was not found.*Lanczos"):
        list(engine.generate(request_for(tiny_model, HiresFix(upscaler="4x-UltraSharp"))))
    image_to_image = request_for(
        tiny_model, HiresFix(), mode=Mode.IMG2IMG, init_image=str(init_image)
    )
    with pytest.raises(InvalidRequest, match="second pass of text-to-image"):
        list(engine.generate(image_to_image))
    with pytest.raises(InvalidRequest, match="denoising strength of 0"):
        list(engine.generate(request_for(tiny_model, HiresFix(denoise=0))))
    with pytest.raises(InvalidRequest, match="a schedule of 1250 steps, over the 1000"):
        list(engine.generate(request_for(tiny_model, HiresFix(steps=500, denoise=0.4))))
    euler_a = HiresFix(sampler="Euler a")
    with pytest.raises(InvalidRequest, match="takes the first pass's schedule type"):
        list(engine.generate(request_for(tiny_model, euler_a, schedule="Karras")))

    from sdstudio.testing.tiny_flow import save_tiny_flux2_klein

    klein = save_tiny_flux2_klein(tmp_path / "klein")
    with pytest.raises(InvalidRequest, match=r"Flux\.2 Klein models have no image-to-image"):
        list(engine.generate(request_for(klein, HiresFix(), guidance_scale=1.0)))


def test_an_inpainting_model_repaints_the_whole_upscaled_image(
    engine: Engine, tiny_inpainting_model: Path
) -> None:
    hires = HiresFix(upscaler="Lanczos", steps=2)
    [result], events, _ = run(engine, request_for(tiny_inpainting_model, hires, steps=2))
    assert result.image.size == (128, 128) and [p.hires for p in events] == [
        False,
        False,
        True,
        True,
    ]
    with pytest.raises(InvalidRequest, match="inpainting model's hires pass starts from an image"):
        list(engine.generate(request_for(tiny_inpainting_model, HiresFix())))


@pytest.mark.parametrize(
    "hires",
    [
        HiresFix(),
        HiresFix(scale=1.5, upscaler="Latent (bicubic antialiased)", steps=12, denoise=0.45),
        HiresFix(width=1024, height=1536, upscaler="Nearest", denoise=0.3),
        HiresFix(
            upscaler="Lanczos",
            sampler="Euler a",
            schedule="SGM Uniform",
            prompt="a lighthouse: sharp, detailed",
            negative_prompt="noise, grain",
            guidance_scale=4.5,
        ),
    ],
)
def test_a1111_text_written_then_read_gives_the_same_request(hires: HiresFix) -> None:
    request = request_for("tiny-sd", hires, width=512, height=768, seed=123)
    text = format_parameters(request, model_name="tiny-sd", version="v1.10.1")
    parsed = read_parameters(text)
    assert parsed.request == request and "hires" in parsed.read
    assert dict(parsed.extras) == {"Version": "v1.10.1"} and parsed.notes == ()


def test_the_hires_keys_are_written_as_a1111_and_forge_write_them() -> None:
    hires = HiresFix(
        scale=2,
        upscaler="Latent",
        steps=10,
        denoise=0.7,
        sampler="Euler a",
        prompt="x, y",
        guidance_scale=5,
    )
    text = format_parameters(request_for("m", hires), model_name="m")
    assert text.splitlines()[-1].endswith(
        'Model: m, Denoising strength: 0.7, Hires sampler: Euler a, Hires prompt: "x, y", '
        "Hires CFG Scale: 5, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent"
    )
    resized = format_parameters(request_for("m", HiresFix(width=1024, height=1024)))
    assert "Denoising strength: 0.7, Hires resize: 1024x1024, Hires upscaler: Latent" in resized
    assert "Hires" not in format_parameters(request_for("m", None))


FORGE = (
    "a lighthouse at dusk\n"
    "Negative prompt: blurry\n"
    "Steps: 2, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 64x64, "
    "Model hash: 0123456789, Model: tiny-sd, Denoising strength: 0.5, "
    "Hires Module 1: Use same choices, Hires CFG Scale: 7, Hires upscale: 2, Hires steps: 2, "
    "Hires upscaler: Latent, Version: f2.0.1v1.10.1-previous-635-gf5330788"
)


@pytest.mark.parametrize(
    ("settings", "expected", "note"),
    [
        # A1111's defaults for what is missing: upscale 2, the first pass's steps.
        (
            "Denoising strength: 0.4, Hires upscaler: Lanczos",
            HiresFix(upscaler="Lanczos", denoise=0.4),
            None,
        ),
        ("Denoising strength: 0.4, Hires upscale: 1.5", HiresFix(scale=1.5, denoise=0.4), None),
        # One side 0: the first pass's shape.
        (
            "Denoising strength: 0.4, Hires resize: 1024x0, Hires upscaler: None",
            HiresFix(width=1024, height=1536, upscaler="Lanczos", denoise=0.4),
            "Hires upscaler 'None' (a plain resize in A1111) is read as Lanczos.",
        ),
        # An upscaler file's name, found when generating.
        (
            "Denoising strength: 0.4, Hires upscale: 2, Hires upscaler: 4x-UltraSharp",
            HiresFix(upscaler="4x-UltraSharp", denoise=0.4),
            None,
        ),
        (
            "Denoising strength: 0.4, Hires upscale: 2, Hires sampler: DPM++ 2M Karras",
            HiresFix(denoise=0.4, sampler="DPM++ 2M", schedule="Karras"),
            None,
        ),
    ],
)
def test_a1111_hires_keys_are_read_with_a1111s_defaults(
    settings: str, expected: HiresFix, note: str | None
) -> None:
    text = f"a\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x768, {settings}"
    parsed = read_parameters(text)
    assert parsed.request.hires == expected and parsed.request.strength == 0.75
    assert dict(parsed.extras) == {}
    if note:
        assert any(n.startswith(note) for n in parsed.notes)
    else:
        assert parsed.notes == ()


@pytest.mark.parametrize(
    ("settings", "note"),
    [
        ("Hires steps: 10, Hires upscale: 2", "the image gives no hires denoising strength"),
        (
            "Denoising strength: 0.4, Hires steps: 10",
            "the image gives no hires upscale or upscaler",
        ),
        ("Denoising strength: 0.4, Hires upscale: 20", "its hires upscale '20' is unusable"),
    ],
)
def test_a_hires_fix_a1111_would_not_run_is_kept_as_written(settings: str, note: str) -> None:
    text = f"a\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x768, {settings}"
    parsed = read_parameters(text)
    assert parsed.request.hires is None and "hires" not in parsed.read
    kept = dict(item.split(": ") for item in settings.split(", "))
    assert dict(parsed.extras) == kept
    assert f"The hires fix is kept as written, not applied: {note}." in parsed.notes


def png_with(path: Path, parameters: str) -> Path:
    info = PngInfo()
    info.add_text("parameters", parameters)
    Image.new("RGB", (128, 128)).save(path, pnginfo=info)
    return path


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def events_of(capsys) -> list[dict]:
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_rerun_of_a_forge_hires_image_makes_it_at_the_hires_size(
    capsys, tmp_path: Path, tiny_model: Path
) -> None:
    image = png_with(tmp_path / "forge.png", FORGE)
    assert main(["info", str(image)]) == 0
    out = capsys.readouterr().out
    assert "Hires fix: upscale 2 with Latent, 2 steps, denoising 0.5" in out
    assert "Also in the image (not applied): Hires Module 1: Use same choices" in out

    args = ["rerun", str(image), "--model", str(tiny_model), "--out", str(tmp_path / "out")]
    assert main([*args, "--json"]) == 0
    events = events_of(capsys)
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    [path] = [e["path"] for e in events if e["event"] == "image"]
    assert image_size(path) == (128, 128)
    settings = read_image_settings(path)
    assert settings.request.hires == HiresFix(steps=2, denoise=0.5)
    assert "Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent" in settings.parameters


def test_generate_takes_the_hires_options(capsys, tmp_path: Path, tiny_model: Path) -> None:
    base = ["generate", "--model", str(tiny_model), "--prompt", "a boat", "--steps", "2"]
    base += ["--width", "64", "--height", "64", "--seed", "3", "--sampler", "Euler"]
    base += ["--out", str(tmp_path / "out"), "--json"]
    hires = ["--hires-upscaler", "lanczos", "--hires-steps", "1", "--hires-denoise", "0.4"]
    hires += ["--hires-sampler", "DPM++ 2M Karras", "--hires-cfg", "5", "--hires-prompt", "a ship"]
    assert main([*base, *hires]) == 0
    events = events_of(capsys)
    assert [(e["step"], e["total"]) for e in events if e["event"] == "step"] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    [path] = [e["path"] for e in events if e["event"] == "image"]
    assert image_size(path) == (128, 128)
    assert read_image_settings(path).request.hires == HiresFix(
        upscaler="Lanczos",
        steps=1,
        denoise=0.4,
        sampler="DPM++ 2M",
        schedule="Karras",
        prompt="a ship",
        guidance_scale=5.0,
    )

    assert main([*base, "--hires-size", "96x128"]) == 0
    [path] = [e["path"] for e in events_of(capsys) if e["event"] == "image"]
    assert image_size(path) == (96, 128)

    for options, message in (
        (["--hires-upscaler", "4x-UltraSharp"], "hires upscaler '4x-UltraSharp' was not found"),
        (["--hires-scale", "2", "--hires-size", "128x128"], "give one"),
        (["--hires-size", "big"], "--hires-size takes WIDTHxHEIGHT"),
        (["--hires-scale", "9"], "Hires upscale must be between 1 and 8"),
    ):
        assert main([*base, *options]) == 1
        assert message in events_of(capsys)[-1]["message"]


def test_the_benchmark_times_both_passes(tiny_model: Path, tmp_path: Path) -> None:
    path = Path(__file__).parents[1] / "benchmarks" / "hires_pass.py"
    spec = importlib.util.spec_from_file_location("hires_pass", path)
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    figures = benchmark.measure(tiny_model, 64, "Latent", tmp_path)
    assert all(value > 0 for value in figures.values())
    assert figures["first_pass_s"] + figures["second_pass_s"] < 30


@pytest.fixture(scope="module")
def esrgan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A1111's ESRGAN folder with a tiny 4x Real-ESRGAN Compact file."""
    from sdstudio.testing.tiny_upscalers import write_tiny_upscaler

    root = tmp_path_factory.mktemp("webui")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    write_tiny_upscaler(root / "models" / "ESRGAN" / "4x-Tiny.pth", "compact", 4)
    return root / "models" / "ESRGAN"


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_an_upscaler_file_upscales_the_first_pass_and_is_recorded_by_its_stem(
    manager, tiny_model: Path, esrgan_folder: Path, tmp_path: Path
) -> None:
    engine = Engine(manager, tmp_path / "inputs", upscaler_dirs=lambda: [esrgan_folder])
    hires = HiresFix(upscaler="4x-tiny", steps=1, denoise=0.3)  # a stem, in any case
    [result], events, statuses = run(engine, request_for(tiny_model, hires))
    assert result.image.size == (128, 128)  # a 4x model, resized to the hires size
    assert [p.hires for p in events] == [False, False, False, True]
    assert "Hires pass: 128x128 with 4x-tiny, 1 step…" in statuses
    assert "Hires upscaler: 4x-tiny" in format_parameters(result.record.request)
    [again], _, _ = run(engine, result.record.request)
    assert np.array_equal(pixels(again.image), pixels(result.image))
    [lanczos], _, _ = run(
        engine, request_for(tiny_model, HiresFix(upscaler="Lanczos", steps=1, denoise=0.3))
    )
    assert not np.array_equal(pixels(lanczos.image), pixels(result.image))

    # A path is used as it is, and A1111's text names the file by its stem.
    by_path = request_for(
        tiny_model, HiresFix(upscaler=str(esrgan_folder / "4x-Tiny.pth"), steps=1)
    )
    [from_path], _, _ = run(Engine(manager, tmp_path / "inputs"), by_path)
    assert from_path.image.size == (128, 128)
    text = format_parameters(from_path.record.request)
    assert "Hires upscaler: 4x-Tiny," in text or text.endswith("Hires upscaler: 4x-Tiny")
    assert from_path.record.request.hires == by_path.hires  # the record keeps the path


def test_an_upscaler_file_that_cannot_be_read_stops_the_hires_pass_with_the_reason(
    manager, tiny_model: Path, tmp_path: Path
) -> None:
    from sdstudio.testing.tiny_upscalers import write_tiny_upscaler

    folder = tmp_path / "upscale_models"
    whole = write_tiny_upscaler(folder / "cut.pth", "compact", 2).read_bytes()
    (folder / "cut.pth").write_bytes(whole[: len(whole) // 2])
    engine = Engine(manager, tmp_path / "inputs", upscaler_dirs=lambda: [folder])
    with pytest.raises(ModelError, match=r"cut\.pth could not be read: it is truncated"):
        list(engine.generate(request_for(tiny_model, HiresFix(upscaler="cut", steps=1))))
