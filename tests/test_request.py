"""The request type: validation with clear messages and a lossless JSON form."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.request import MAX_SEED, GenerationRequest, Mode, round_to_multiple_of_8


def make(**changes) -> GenerationRequest:
    return GenerationRequest(model="m", prompt="a cat", **changes)


def test_defaults_are_a_valid_txt2img_request() -> None:
    request = make()
    assert request.mode is Mode.TXT2IMG
    assert request.seed == -1


def test_is_frozen() -> None:
    with pytest.raises(AttributeError):
        make().steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "Steps must be between 1 and 500, not 0"),
        ({"width": 500}, "Width must be a multiple of 8, not 500 (the nearest is 504)"),
        ({"height": 30}, "Height must be between 64 and 4096 pixels, not 30"),
        (
            {"strength": 1.5, "mode": Mode.IMG2IMG, "init_image": "x.png"},
            "Strength must be between 0 and 1, not 1.5",
        ),
        ({"seed": -2}, "Seed must be -1 (random)"),
        ({"batch_size": 0}, "Batch size must be between 1 and 64"),
        ({"guidance_scale": -1}, "Guidance scale must be between 0 and 50"),
        ({"mode": Mode.IMG2IMG}, "img2img needs an init image"),
        ({"mode": Mode.INPAINT, "init_image": "x.png"}, "Inpainting needs a mask"),
        ({"init_image": "x.png"}, "A text-to-image request takes no init image"),
        (
            {"mode": Mode.IMG2IMG, "init_image": "x", "steps": 4, "strength": 0.1},
            "leaves no denoising step",
        ),
        ({"steps": 2.5}, "steps must be a whole number"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(changes, message) -> None:
    with pytest.raises(InvalidRequest) as raised:
        make(**changes)
    assert message in str(raised.value)


def test_empty_model_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="No model"):
        GenerationRequest(model=" ", prompt="x")


def test_seed_resolution_and_batch_seeds() -> None:
    request = make(batch_size=3).with_seed_resolved()
    assert 0 <= request.seed <= MAX_SEED
    assert request.seeds() == [(request.seed + i) % (MAX_SEED + 1) for i in range(3)]
    assert make(seed=MAX_SEED, batch_size=2).seeds() == [MAX_SEED, 0]
    assert make(seed=5).with_seed_resolved().seed == 5


def test_64_bit_seeds_are_kept_and_batches_wrap_at_2_to_the_64() -> None:
    assert MAX_SEED == 2**64 - 1
    for seed in (2**32, 1125899906842624, 2**63, 2**64 - 1):
        request = make(seed=seed)
        assert request.seed == seed
        assert GenerationRequest.from_json(request.to_json()).seed == seed
    assert make(seed=2**64 - 2, batch_size=3).seeds() == [2**64 - 2, 2**64 - 1, 0]
    for seed in (2**64, -2):
        with pytest.raises(
            InvalidRequest, match=rf"between 0 and {2**64 - 1}, not (-2|a number of 20 digits)\."
        ):
            make(seed=seed)


def test_random_seeds_are_drawn_from_32_bits() -> None:
    class Recording(random.Random):
        def randint(self, a: int, b: int) -> int:
            self.bounds = (a, b)
            return b

    rng = Recording()
    assert make().with_seed_resolved(rng).seed == 2**32 - 1
    assert rng.bounds == (0, 2**32 - 1)


def test_unresolved_seed_has_no_batch_seeds() -> None:
    with pytest.raises(InvalidRequest):
        make().seeds()


def test_round_to_multiple_of_8() -> None:
    assert [round_to_multiple_of_8(v) for v in (500, 503, 504, 10, 1000)] == [
        504,
        504,
        504,
        64,
        1000,
    ]


requests = st.builds(
    GenerationRequest,
    model=st.text(min_size=1).filter(str.strip),
    prompt=st.text(),
    negative_prompt=st.text(),
    steps=st.integers(4, 500),
    guidance_scale=st.floats(0, 50, allow_nan=False),
    seed=st.integers(-1, MAX_SEED),
    width=st.integers(8, 512).map(lambda v: v * 8),
    height=st.integers(8, 512).map(lambda v: v * 8),
    batch_size=st.integers(1, 64),
    mode=st.just(Mode.IMG2IMG),
    init_image=st.text(min_size=1),
    strength=st.floats(0.25, 1.0),
)


@settings(max_examples=200, deadline=None)
@given(requests)
def test_json_form_is_lossless(request: GenerationRequest) -> None:
    assert GenerationRequest.from_json(request.to_json()) == request


def test_from_json_refuses_newer_schema_and_bad_text() -> None:
    data = make().to_dict()
    data["schema"] = 99
    with pytest.raises(InvalidRequest, match="newer sdstudio"):
        GenerationRequest.from_dict(data)
    with pytest.raises(InvalidRequest, match="Not a valid generation request"):
        GenerationRequest.from_json("{not json")
    with pytest.raises(InvalidRequest, match="Unknown mode"):
        GenerationRequest.from_dict({**make().to_dict(), "mode": "paint"})
    with pytest.raises(InvalidRequest, match="Incomplete"):
        GenerationRequest.from_dict({"prompt": "x"})


def test_from_dict_ignores_unknown_keys() -> None:
    data = {**make(seed=3).to_dict(), "added_later": 1}
    assert GenerationRequest.from_dict(data) == make(seed=3)


# --- numbers too large for any setting ----------------------------------------

HUGE_NUMBERS = [
    ("seed", 10**30, "Seed must be -1 (random) or between 0 and 18446744073709551615"),
    ("steps", 10**20, "Steps must be between 1 and 500"),
    ("width", 10**20, "Width must be between 64 and 4096 pixels"),
    ("height", -(10**20), "Height must be between 64 and 4096 pixels"),
    ("batch_size", 10**20, "Batch size must be between 1 and 64"),
    ("clip_skip", 10**20, "Clip skip must be between 1 and 12"),
    ("guidance_scale", 10**400, "Guidance scale must be between 0 and 50"),
    ("strength", 10**400, "Strength must be between 0 and 1"),
]


@pytest.mark.parametrize(("name", "value", "message"), HUGE_NUMBERS, ids=lambda v: str(v)[:12])
def test_huge_numbers_are_refused_with_a_short_message(name: str, value: int, message: str) -> None:
    for build in (
        lambda: make(**{name: value}),
        lambda: GenerationRequest.from_dict({**make().to_dict(), name: value}),
        lambda: GenerationRequest.from_json(json.dumps({**make().to_dict(), name: value})),
    ):
        with pytest.raises(InvalidRequest) as raised:
            build()
        text = str(raised.value)
        assert text.startswith(message) and text.endswith("digits.") and len(text) < 120, text


def test_json_with_a_number_python_cannot_read_is_refused() -> None:
    text = make().to_json().replace('"seed": -1', '"seed": 1' + "0" * 5000)
    with pytest.raises(InvalidRequest, match="a number in it has too many digits"):
        GenerationRequest.from_json(text)
    with pytest.raises(InvalidRequest, match="nests too deeply"):
        GenerationRequest.from_json("[" * 100_000)
    with pytest.raises(InvalidRequest, match="Unknown mode"):
        GenerationRequest.from_dict({**make().to_dict(), "mode": ["img2img"]})
    with pytest.raises(InvalidRequest, match="init_image must be a path"):
        make(mode=Mode.IMG2IMG, init_image=10**30)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "--seed",
            "Seed must be -1 (random) or between 0 and 18446744073709551615, not a number of",
        ),
        ("--steps", "Steps must be between 1 and 500, not a number of 21 digits."),
        ("--width", "Width must be between 64 and 4096 pixels, not a number of 21 digits."),
        ("--height", "Height must be between 64 and 4096 pixels, not a number of 21 digits."),
        ("--batch", "Batch size must be between 1 and 64, not a number of 21 digits."),
    ],
)
def test_huge_numbers_on_the_command_line_get_a_clear_message(
    capsys: pytest.CaptureFixture[str], tiny_model, option: str, message: str
) -> None:
    from sdstudio.cli import main

    value = str(10**30 if option == "--seed" else 10**20)
    common = ["--prompt", "x", "--steps", "1", "--width", "64", "--height", "64"]
    code = main(["generate", "--model", str(tiny_model), *common, option, value])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {message}" in err and "unexpected failure" not in err
    assert main(["rerun", "1", "--seed", str(10**30)]) == 1
    assert "unexpected failure" not in capsys.readouterr().err


def test_huge_numbers_in_an_image_give_a_clear_message(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from sdstudio.cli import main

    record = {"format": "sdstudio", "version": 1, "request": make(seed=1).to_dict()}
    for name, value, _message in HUGE_NUMBERS:
        for number in (str(value), "1" + "0" * 4400):
            info = PngInfo()
            data = {**record, "request": {**record["request"], name: 0}}
            info.add_text(
                "sdstudio", json.dumps(data).replace(f'"{name}": 0', f'"{name}": {number}')
            )
            info.add_text("parameters", f"x\nSteps: {number}, Seed: {number}, Size: {number}x64")
            path = tmp_path / "huge.png"
            Image.new("RGB", (64, 64)).save(path, pnginfo=info)
            for command in (["info", str(path)], ["rerun", str(path), "--model", "m"]):
                code = main(command)
                captured = capsys.readouterr()
                assert code in (0, 1)
                assert "unexpected failure" not in captured.err
                last = captured.err.strip().splitlines()[-1] if captured.err.strip() else ""
                assert code == 0 or last.startswith("error: ")
