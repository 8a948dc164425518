"""Prompt editing and alternation in real passes: the UNet reads each plain prompt's
embeddings at exactly the model calls A1111's schedule gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdstudio.engine import prompt_embeds
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine
from sdstudio.engine.refine.hires_settings import HiresFix
from sdstudio.engine.request import GenerationRequest, Mode


def request_for(model: Path, **changes: Any) -> GenerationRequest:
    values = {"prompt": "a red boat", "steps": 6, "width": 64, "height": 64, "seed": 5}
    values.update(changes)
    return GenerationRequest(model=str(model), sampler="Euler", **values)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``encoder_hidden_states`` of every UNet call."""
    from diffusers import UNet2DConditionModel

    seen: list[Any] = []
    forward = UNet2DConditionModel.forward

    def recording(self: Any, sample: Any, timestep: Any, encoder_hidden_states: Any, *a, **k):
        seen.append(encoder_hidden_states.detach().clone())
        return forward(self, sample, timestep, encoder_hidden_states, *a, **k)

    monkeypatch.setattr(UNet2DConditionModel, "forward", recording)
    return seen


def generate(engine: Engine, request: GenerationRequest) -> list[np.ndarray]:
    return [np.asarray(done.image) for done in engine.generate(request)]


def embeds(engine: Engine, request: GenerationRequest, positive: str, negative: str = "") -> Any:
    pipe = engine.pipelines.pipeline(request.model, request.mode)
    encoded = prompt_embeds.encode_prompts(pipe, positive, negative)
    assert encoded is not None
    return encoded


def check_calls(calls: list[Any], expected: list[Any]) -> None:
    import torch

    assert len(calls) == len(expected)
    for index, (seen, want) in enumerate(zip(calls, expected, strict=True)):
        both = torch.cat([want.negative_prompt_embeds, want.prompt_embeds])
        assert torch.equal(seen, both.to(seen.dtype)), f"model call {index}"


def test_editing_switches_after_the_scheduled_step(
    engine: Engine, tiny_model: Path, calls: list[Any]
) -> None:
    request = request_for(tiny_model, prompt="a [red:blue:0.5] boat", negative_prompt="[ugly::2]")
    first = generate(engine, request)
    # 6 steps: "red" ends at step 3, so calls 0-3 read it; "ugly" ends at step 2.
    red_ugly = embeds(engine, request, "a red boat", "ugly")
    red = embeds(engine, request, "a red boat", "")
    blue = embeds(engine, request, "a blue boat", "")
    check_calls(calls, [red_ugly, red_ugly, red_ugly, red, blue, blue])
    calls.clear()
    assert np.array_equal(generate(engine, request)[0], first[0])  # re-run is exact
    check_calls(calls, [red_ugly, red_ugly, red_ugly, red, blue, blue])


def test_edited_image_differs_from_both_plain_prompts(engine: Engine, tiny_model: Path) -> None:
    [edited] = generate(engine, request_for(tiny_model, prompt="a [red:blue:0.5] boat", steps=4))
    [red] = generate(engine, request_for(tiny_model, prompt="a red boat", steps=4))
    [blue] = generate(engine, request_for(tiny_model, prompt="a blue boat", steps=4))
    assert not np.array_equal(edited, red)
    assert not np.array_equal(edited, blue)


def test_plain_prompts_keep_their_pixels(engine: Engine, tiny_model: Path) -> None:
    """A schedule that never switches encodes as the plain prompt's text path does."""
    [plain] = generate(engine, request_for(tiny_model, prompt="a red boat"))
    assert engine._timeline is None
    [scheduled] = generate(engine, request_for(tiny_model, prompt="a red [boat:ship:1.0]"))
    assert engine._timeline is not None
    assert np.array_equal(plain, scheduled)


def test_alternation_takes_turns_per_call_in_a_batch(
    engine: Engine, tiny_model: Path, calls: list[Any]
) -> None:
    request = request_for(tiny_model, prompt="a [cat|dog]", steps=4, batch_size=2)
    images = generate(engine, request)
    cat, dog = embeds(engine, request, "a cat"), embeds(engine, request, "a dog")
    # Call 0 reads the entry ending at step 1, as A1111's sampler does.
    check_calls(calls, [cat, cat, dog, cat] * 2)
    assert not np.array_equal(images[0], images[1])


def test_img2img_counts_the_requested_steps(
    engine: Engine, tiny_model: Path, init_image: Path, calls: list[Any]
) -> None:
    request = request_for(
        tiny_model,
        mode=Mode.IMG2IMG,
        init_image=str(init_image),
        strength=0.5,
        steps=10,
        prompt="[red:blue:3] boat",
    )
    generate(engine, request)
    red, blue = embeds(engine, request, "red boat"), embeds(engine, request, "blue boat")
    check_calls(calls, [red, red, red, red, blue])  # 5 of 10 steps run


def test_hires_pass_counts_on_from_the_first_pass(
    engine: Engine, tiny_model: Path, calls: list[Any]
) -> None:
    hires = HiresFix(upscaler="Latent", steps=3, denoise=0.6, scale=1.5)
    request = request_for(tiny_model, prompt="[red:blue:5] boat", steps=4, hires=hires)
    generate(engine, request)
    red, blue = embeds(engine, request, "red boat"), embeds(engine, request, "blue boat")
    # First pass: 4 steps, all "red" (5 is past its end); in the hires pass step 5 is
    # its step 1, so its calls 0 and 1 read "red".
    assert len(calls) == 7
    check_calls(calls, [red] * 4 + [red, red, blue])


def test_passes_that_read_text_refuse_schedules(tiny_model: Path, engine: Engine) -> None:
    request = request_for(tiny_model)
    pipe = engine.pipelines.pipeline(request.model, request.mode)
    with pytest.raises(InvalidRequest, match="Prompt editing"):
        prompt_embeds.prompt_arguments(pipe, "a [b|c]", "", 1)


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdstudio.testing.tiny_refiner import save_tiny_sdxl

    return save_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


def test_sdxl_switches_embeddings_and_pooled_embeddings(
    engine: Engine, tiny_sdxl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    seen: list[tuple[Any, Any]] = []
    forward = UNet2DConditionModel.forward

    def recording(self: Any, sample: Any, timestep: Any, encoder_hidden_states: Any, *a, **k):
        seen.append((encoder_hidden_states.clone(), k["added_cond_kwargs"]["text_embeds"].clone()))
        return forward(self, sample, timestep, encoder_hidden_states, *a, **k)

    monkeypatch.setattr(UNet2DConditionModel, "forward", recording)
    request = request_for(tiny_sdxl, prompt="a [red|blue] boat", negative_prompt="ugly", steps=3)
    generate(engine, request)
    red = embeds(engine, request, "a red boat", "ugly")
    blue = embeds(engine, request, "a blue boat", "ugly")
    assert len(seen) == 3
    for (states, pooled), want in zip(seen, [red, red, blue], strict=True):
        both = torch.cat([want.negative_prompt_embeds, want.prompt_embeds])
        assert torch.equal(states, both.to(states.dtype))
        pooled_both = torch.cat([want.negative_pooled_prompt_embeds, want.pooled_prompt_embeds])
        assert torch.equal(pooled, pooled_both.to(pooled.dtype))


def test_refusal_names_the_families_that_switch() -> None:
    from sdstudio.engine.prompting.scheduled_embeds import refuse

    refuse("a (plain:1.2) prompt", "", "Flux models")  # nothing scheduled: nothing refused
    with pytest.raises(InvalidRequest, match=r"SD 1\.x, SD 2\.x and SDXL models only"):
        refuse("a plain prompt", "[ugly|bad]", "Flux models")
