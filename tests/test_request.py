"""The request type: validation with clear messages and a lossless JSON form."""

from __future__ import annotations

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
