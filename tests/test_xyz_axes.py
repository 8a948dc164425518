"""X/Y/Z plot axes: A1111's value syntax, each axis applied to a request, the plan."""

from __future__ import annotations

import random

import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode
from sdstudio.engine.xyz.axes import AXIS_NAMES, lora_names, parse_axis, parse_axis_option
from sdstudio.engine.xyz.plan import image_count, plan_plot
from sdstudio.engine.xyz.values import split_values

BASE = GenerationRequest(
    model="/models/base",
    prompt="a cat on a mat, oil painting <lora:inky:0.8>",
    negative_prompt="cat hair, blurry",
    seed=42,
    width=512,
    height=512,
)


def values(name: str, text: str) -> tuple:
    return parse_axis(name, text).values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2, 3", [1, 2, 3]),
        ("1-5", [1, 2, 3, 4, 5]),
        ("1-9 (+2)", [1, 3, 5, 7, 9]),
        ("10-1 (-3)", [10, 7, 4, 1]),
        ("1-10 [4]", [1, 4, 7, 10]),
        ("1-10 [3]", [1, 5, 10]),  # 5.5 truncated, as A1111's int(linspace)
        ("8, 1-3, 20", [8, 1, 2, 3, 20]),
        ('"4", 6', [4, 6]),
        ("5-5", [5]),
    ],
)
def test_integer_values_and_ranges(text: str, expected: list[int]) -> None:
    assert list(values("Steps", text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7, 7.5", [7.0, 7.5]),
        ("0.5-1.5 (+0.25)", [0.5, 0.75, 1.0, 1.25, 1.5]),
        ("0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("1-2", [1.0, 2.0]),
        ("3-1.5 (-0.5)", [3.0, 2.5, 2.0, 1.5]),
        ("0.1-0.3 (+0.1)", [0.1, 0.2, 0.3]),
    ],
)
def test_float_values_and_ranges(text: str, expected: list[float]) -> None:
    assert list(values("CFG Scale", text)) == pytest.approx(expected)


def test_quoted_values_keep_their_commas() -> None:
    assert split_values('cat, "dog, big", "bird"') == ["cat", "dog, big", "bird"]
    assert split_values("a,b,") == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("Steps", "ten", "Steps: 'ten' is not a whole number"),
        ("CFG Scale", "7, high", "CFG Scale: 'high' is not a number"),
        ("CFG Scale", "nan", "is not a number"),
        ("Steps", "1-5 (+0)", "step of 0"),
        ("Steps", "1-5 (-1)", "never reaches 5"),
        ("Steps", "1-5 [0]", "asks for no values"),
        ("Steps", "1-100000", "at most 100"),
        ("Size", "512", "not a size such as 512x768"),
        ("Steps", "", "has no values"),
        ("Sharpness", "1", "Unknown X/Y/Z axis 'Sharpness'; valid: Seed, Var. seed"),
    ],
)
def test_bad_values_are_named(name: str, text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_axis(name, text)


def test_axis_option_and_names_in_any_case() -> None:
    axis = parse_axis_option("cfg scale: 3, 5")
    assert axis.kind.name == "CFG Scale"
    assert axis.labels == ["CFG Scale: 3.0", "CFG Scale: 5.0"]
    with pytest.raises(InvalidRequest, match="'NAME: VALUES'"):
        parse_axis_option("Steps 10")
    for name in ("Seed", "Prompt S/R", "Checkpoint name", "LoRA weight", "Hires upscaler"):
        assert name in AXIS_NAMES


def apply(name: str, text: str, request: GenerationRequest = BASE) -> list[GenerationRequest]:
    axis = parse_axis(name, text)
    return [axis.apply(request, i) for i in range(len(axis.values))]


def test_simple_axes_set_their_fields() -> None:
    assert [r.steps for r in apply("Steps", "10,20")] == [10, 20]
    assert [r.guidance_scale for r in apply("CFG Scale", "1.5")] == [1.5]
    assert [r.distilled_guidance for r in apply("Distilled CFG Scale", "2")] == [2.0]
    assert [r.seed for r in apply("Seed", "1-3")] == [1, 2, 3]
    assert [r.variation_seed for r in apply("Var. seed", "7")] == [7]
    assert [r.variation_strength for r in apply("Var. strength", "0-1 [3]")] == [0, 0.5, 1]
    assert [r.clip_skip for r in apply("Clip skip", "1,2")] == [1, 2]
    assert [(r.width, r.height) for r in apply("Size", "512x768, 640×384")] == [
        (512, 768),
        (640, 384),
    ]
    assert [r.width for r in apply("Width", "576")] == [576]
    assert [r.height for r in apply("Height", "640")] == [640]
    assert [r.schedule for r in apply("Schedule type", "karras, Exponential")] == [
        "Karras",
        "Exponential",
    ]


def test_sampler_axis_keeps_the_schedule_unless_named() -> None:
    plain, combined = apply(
        "Sampler", "Euler a, DPM++ 2M Karras", BASE.replace(schedule="Exponential")
    )
    assert (plain.sampler, plain.schedule) == ("Euler a", "Exponential")
    assert (combined.sampler, combined.schedule) == ("DPM++ 2M", "Karras")
    with pytest.raises(InvalidRequest, match="Sampler Blur 9"):
        apply("Sampler", "Blur 9")


def test_prompt_search_and_replace_in_both_prompts() -> None:
    first, second = apply("Prompt S/R", "cat, dog")
    assert first.prompt == BASE.prompt and first.negative_prompt == BASE.negative_prompt
    assert second.prompt.startswith("a dog on a mat")
    assert second.negative_prompt == "dog hair, blurry"
    axis = parse_axis("Prompt S/R", "cat, dog")
    assert axis.labels == ["cat", "dog"]
    with pytest.raises(InvalidRequest, match="did not find 'horse'"):
        apply("Prompt S/R", "horse, dog")


def test_prompt_order_swaps_the_words_in_place() -> None:
    request = BASE.replace(prompt="red, blue, green sky")
    axis = parse_axis("Prompt order", "red, green")
    prompts = [axis.apply(request, i).prompt for i in range(len(axis.values))]
    assert prompts == ["red, blue, green sky", "green, blue, red sky"]
    assert axis.labels == ["red, green", "green, red"]


def test_lora_weight_replaces_the_tag_weight() -> None:
    two = BASE.replace(prompt="x <lora:inky:0.8> <lora:Soft:1:0.5> <lyco:inky>")
    assert lora_names(two.prompt) == ["inky", "Soft"]
    numbers = apply("LoRA weight", "0-1 [3]")
    assert [r.prompt.split("<")[1] for r in numbers] == [
        "lora:inky:0>",
        "lora:inky:0.5>",
        "lora:inky:1>",
    ]
    named = apply("LoRA weight", "soft:0.25, inky:0.5", two)
    assert named[0].prompt == "x <lora:inky:0.8> <lora:Soft:0.25:0.5> <lyco:inky>"
    assert named[1].prompt == "x <lora:inky:0.5> <lora:Soft:1:0.5> <lyco:inky:0.5>"
    with pytest.raises(InvalidRequest, match="2 LoRA tags; name the LoRA"):
        apply("LoRA weight", "0.5", two)
    with pytest.raises(InvalidRequest, match="no <lora:gone"):
        apply("LoRA weight", "gone:1")
    assert parse_axis("LoRA weight", "inky:0.5").labels == ["LoRA weight: inky 0.5"]


def test_denoising_and_hires_axes_need_their_pass() -> None:
    img2img = BASE.replace(mode=Mode.IMG2IMG, init_image="/tmp/x.png")
    assert [r.strength for r in apply("Denoising", "0.3, 0.6", img2img)] == [0.3, 0.6]
    hires = BASE.replace(hires=HiresFix(scale=1.5))
    assert [r.hires.denoise for r in apply("Denoising", "0.4", hires)] == [0.4]
    assert [r.hires.steps for r in apply("Hires steps", "5, 8", hires)] == [5, 8]
    assert [r.hires.scale for r in apply("Hires upscale", "1.25", hires)] == [1.25]
    assert [r.hires.upscaler for r in apply("Hires upscaler", "Lanczos", hires)] == ["Lanczos"]
    with pytest.raises(InvalidRequest, match=r"Denoising 0\.3: Denoising applies"):
        apply("Denoising", "0.3")
    with pytest.raises(InvalidRequest, match="hires fix turned on"):
        apply("Hires steps", "5")


def test_invalid_value_names_the_axis_and_value() -> None:
    with pytest.raises(InvalidRequest, match=r"^Steps 0: .*Steps must be between"):
        apply("Steps", "10, 0")
    with pytest.raises(InvalidRequest, match=r"CFG Scale 99.0"):
        plan_plot(BASE, [parse_axis("Steps", "1"), parse_axis("CFG Scale", "5, 99")])


def test_checkpoint_and_vae_values_are_resolved() -> None:
    axis = parse_axis("Checkpoint name", "a, b", resolve=lambda name: f"/models/{name}.safetensors")
    requests = [axis.apply(BASE, i) for i in range(2)]
    assert [r.model for r in requests] == ["/models/a.safetensors", "/models/b.safetensors"]
    assert axis.labels == ["a.safetensors", "b.safetensors"]
    assert axis.kind.cost > 0
    vae = parse_axis("VAE", "x.pt")
    assert vae.apply(BASE, 0).vae == "x.pt"


def test_plan_order_index_and_labels() -> None:
    plot = plan_plot(
        BASE,
        [parse_axis("Steps", "1,2,3"), parse_axis("CFG Scale", "4,5"), parse_axis("Seed", "7,8")],
    )
    assert plot.shape == (3, 2, 2)
    assert [c.index for c in plot.cells] == list(range(12))  # X fastest, then Y, then Z
    assert [(c.x, c.y, c.z) for c in plot.cells[:4]] == [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 1, 0)]
    cell = plot.cells[7]
    assert (cell.request.steps, cell.request.guidance_scale, cell.request.seed) == (2, 4.0, 8)
    assert plot.labels("Z") == ["Seed: 7", "Seed: 8"]
    assert plot.parameters() == (
        'X Type: Steps, X Values: "1,2,3", Y Type: CFG Scale, Y Values: "4,5", '
        'Z Type: Seed, Z Values: "7,8"'
    )


def test_checkpoint_axis_runs_outermost() -> None:
    plot = plan_plot(BASE, [parse_axis("Checkpoint name", "a,b"), parse_axis("Steps", "1,2")])
    assert [(c.x, c.y) for c in plot.cells] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [c.index for c in plot.cells] == [0, 2, 1, 3]


def test_random_seed_is_drawn_once_unless_kept() -> None:
    base = BASE.replace(seed=-1)
    plot = plan_plot(base, [parse_axis("Steps", "1,2,3")], rng=random.Random(5))
    seeds = {c.request.seed for c in plot.cells}
    assert len(seeds) == 1 and -1 not in seeds
    kept = plan_plot(base, [parse_axis("Steps", "1,2")], keep_random_seeds=True)
    assert {c.request.seed for c in kept.cells} == {-1}
    on_axis = plan_plot(base, [parse_axis("Seed", "-1, 5, -1")], rng=random.Random(1))
    drawn = [c.request.seed for c in on_axis.cells]
    assert drawn[1] == 5 and drawn[0] != drawn[2] and -1 not in drawn
    assert on_axis.labels("X")[1] == "Seed: 5"


def test_image_cap_and_axis_count() -> None:
    axes = [parse_axis("Steps", "1-10"), parse_axis("CFG Scale", "1-11")]
    assert image_count(axes) == 110
    with pytest.raises(InvalidRequest, match=r"would make 110 images \(10 × 11\); at most 100"):
        plan_plot(BASE, axes)
    assert len(plan_plot(BASE, axes, max_images=110).cells) == 110
    with pytest.raises(InvalidRequest, match="batch of 4"):
        plan_plot(BASE.replace(batch_size=4), [parse_axis("Steps", "1-30")])
    with pytest.raises(InvalidRequest, match="at most 3 axes"):
        plan_plot(BASE, [parse_axis("Steps", "1")] * 4)
    with pytest.raises(InvalidRequest, match="megapixels"):
        plan_plot(BASE.replace(width=4096, height=4096), [parse_axis("Steps", "1-20")])
