"""A1111 prompt syntax: the parser, A1111-style text embeddings and their use by the engine."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.engine import prompt_embeds, samplers
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.generation import Engine
from sdstudio.engine.metadata.a1111 import format_parameters, parse_parameters
from sdstudio.engine.prompt_embeds import encode_prompts, needs_embeddings, tokenize_chunks
from sdstudio.engine.prompts import parse_prompt, parse_prompt_attention
from sdstudio.engine.request import GenerationRequest, Mode

# --- the parser --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A1111's own doctest examples, with its exact float results.
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        # More of A1111's rules.
        ("", [("", 1.0)]),
        ("[quiet]", [("quiet", 1 / 1.1)]),
        ("(a: 1.25 ) b", [("a", 1.25), (" b", 1.0)]),
        ("smile :) ok]", [("smile :) ok]", 1.0)]),
        ("back\\\\slash", [("back\\slash", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("a BREAKING b", [("a BREAKING b", 1.0)]),
    ],
)
def test_parser_matches_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


def test_extra_network_tags_are_removed_and_returned() -> None:
    parsed = parse_prompt("a <lora:detail:0.5> cat, <hypernet:ink:0.3> <lora:plain> (red)")
    assert parsed.loras == [("detail", 0.5), ("plain", 1.0)]
    assert parsed.hypernets == [("ink", 0.3)]
    assert "<" not in parsed.text and "lora" not in parsed.text
    assert parsed.runs == [("a  cat,   ", 1.0), ("red", 1.1)]


# --- the embeddings ----------------------------------------------------------


@pytest.fixture(scope="module")
def pipe() -> Any:
    """A tiny pipeline whose final layer norm has a bias, as real CLIP models do.

    With a zero bias every token's embedding has mean 0, and A1111's rescaling
    to the original mean would divide by almost nothing.
    """
    from sdstudio.testing import build_tiny_pipeline

    pipeline = build_tiny_pipeline()
    with torch.no_grad():
        pipeline.text_encoder.final_layer_norm.bias.fill_(0.5)
    return pipeline


def reference(pipe: Any, prompt: str, negative: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        positive, negative_embeds = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    return positive, negative_embeds


def embeds(pipe: Any, prompt: str, negative: str = "", clip_skip: int = 1) -> Any:
    result = encode_prompts(pipe, prompt, negative, clip_skip=clip_skip)
    assert result is not None
    return result


def words(count: int, *, change: int | None = None) -> str:
    """``count`` one-token words (the tiny tokenizer reads "q" as one token)."""
    return " ".join("z" if i == change else "q" for i in range(count))


def test_plain_prompt_encodes_exactly_as_the_pipeline(pipe: Any) -> None:
    result = embeds(pipe, "a red boat", "ugly")
    positive, negative = reference(pipe, "a red boat", "ugly")
    assert torch.equal(result.prompt_embeds, positive)
    assert torch.equal(result.negative_prompt_embeds, negative)


def test_weight_scales_the_weighted_tokens_and_keeps_the_mean(pipe: Any) -> None:
    plain = embeds(pipe, "a red boat").prompt_embeds
    weighted = embeds(pipe, "a (red:1.5) boat").prompt_embeds
    assert weighted.shape == plain.shape == (1, 77, 32)
    assert not torch.equal(weighted, plain)
    ratio = weighted / plain
    # Tokens: BOS, "a", "r", "e", "d", "b", ... ("red" is three tokens here).
    scale = ratio[0, 0, 0]
    assert torch.allclose(ratio[0, 2:5], 1.5 * scale.expand(3, 32), rtol=1e-4)
    assert torch.allclose(ratio[0, [0, 1, 5, 76]], scale.expand(4, 32), rtol=1e-4)
    assert torch.isclose(weighted.mean(), plain.mean(), rtol=1e-5)


def test_weight_one_equals_plain(pipe: Any) -> None:
    assert torch.equal(
        embeds(pipe, "a (red:1.0) boat").prompt_embeds, embeds(pipe, "a red boat").prompt_embeds
    )
    assert not needs_embeddings(pipe.tokenizer, "a (red:1.0) boat", "", 1)


def test_long_prompt_is_chunked_not_truncated(pipe: Any) -> None:
    prompt = words(200)
    chunks = tokenize_chunks(pipe.tokenizer, prompt)
    assert [len(c.tokens) for c in chunks] == [77, 77, 77]
    assert sum(t != pipe.tokenizer.eos_token_id for c in chunks for t in c.tokens[1:-1]) == 200
    first = embeds(pipe, prompt).prompt_embeds
    changed = embeds(pipe, words(200, change=150)).prompt_embeds
    assert first.shape == (1, 3 * 77, 32)
    assert torch.equal(first[:, :154], changed[:, :154])  # chunks 1 and 2 are untouched
    assert not torch.equal(first[:, 154:], changed[:, 154:])
    assert needs_embeddings(pipe.tokenizer, prompt, "", 1)


def test_negative_prompt_is_padded_with_empty_chunks(pipe: Any) -> None:
    result = embeds(pipe, words(100), "ugly")
    assert result.prompt_embeds.shape == result.negative_prompt_embeds.shape == (1, 154, 32)
    _, negative = reference(pipe, "x", "ugly")
    empty, _ = reference(pipe, "", "")
    assert torch.equal(result.negative_prompt_embeds[:, :77], negative)
    assert torch.equal(result.negative_prompt_embeds[:, 77:], empty)
    swapped = embeds(pipe, "ugly", words(100))
    assert swapped.prompt_embeds.shape == swapped.negative_prompt_embeds.shape == (1, 154, 32)


def test_break_starts_a_new_chunk(pipe: Any) -> None:
    chunks = tokenize_chunks(pipe.tokenizer, "q BREAK q")
    assert len(chunks) == 2
    eos = pipe.tokenizer.eos_token_id
    assert all(c.tokens[2:] == [eos] * 75 for c in chunks)


def test_a_full_chunk_is_cut_after_a_nearby_comma(pipe: Any) -> None:
    # 69 tokens, a comma, then 10 more: the chunk would fill up 6 tokens after
    # the comma, so A1111 moves those 6 to the next chunk.
    prompt = "q " * 69 + ", " + "z " * 10
    first, second = tokenize_chunks(pipe.tokenizer, prompt)
    comma = pipe.tokenizer.get_vocab()[",</w>"]
    eos = pipe.tokenizer.eos_token_id
    assert first.tokens[70] == comma and first.tokens[71:] == [eos] * 6
    assert second.tokens[1:11] == [pipe.tokenizer.convert_tokens_to_ids("z</w>")] * 10


def test_clip_skip_uses_an_earlier_layer(pipe: Any) -> None:
    one = embeds(pipe, "a red boat").prompt_embeds
    two = embeds(pipe, "a red boat", clip_skip=2)
    assert not torch.equal(one, two.prompt_embeds)
    ids = pipe.tokenizer("a red boat", padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipe.text_encoder(ids, output_hidden_states=True).hidden_states
        expected = pipe.text_encoder.final_layer_norm(states[-2])
    assert torch.allclose(two.prompt_embeds, expected)
    assert two.negative_prompt_embeds.shape == (1, 77, 32)
    assert embeds(pipe, "a red boat", clip_skip=12).prompt_embeds.shape == (1, 77, 32)


def test_lora_tags_are_not_encoded(pipe: Any) -> None:
    tagged = embeds(pipe, "a red boat <lora:x:0.5>", "<lora:y:1>").prompt_embeds
    assert torch.equal(tagged, reference(pipe, "a red boat")[0])
    assert prompt_embeds.plain_text("a red boat<lora:x:0.5>") == "a red boat"


def test_when_embeddings_are_needed(pipe: Any) -> None:
    tokenizer = pipe.tokenizer
    assert not needs_embeddings(tokenizer, "a red boat, smile :) ok", "ugly", 1)
    assert not needs_embeddings(tokenizer, "a red boat <lora:x:1>", "ugly", 1)
    assert not needs_embeddings(tokenizer, words(75), "", 1)
    assert needs_embeddings(tokenizer, words(76), "", 1)
    assert needs_embeddings(tokenizer, "a", words(76), 1)
    assert needs_embeddings(tokenizer, "a [red] boat", "", 1)
    assert needs_embeddings(tokenizer, "a", "(ugly)", 1)
    assert needs_embeddings(tokenizer, "a BREAK b", "", 1)
    assert needs_embeddings(tokenizer, "a red boat", "", 2)


def test_unknown_text_encoders_fall_back_to_text() -> None:
    other = SimpleNamespace(
        tokenizer=None, text_encoder=object(), tokenizer_2=None, text_encoder_2=object()
    )
    assert encode_prompts(other, "(red:1.5)") is None
    assert prompt_embeds.prompt_arguments(other, "a (red:1.5) <lora:x:1>", "", 2) == {
        "prompt": "a red ",
        "negative_prompt": None,
    }


# --- SDXL --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl() -> Any:
    """A tiny SDXL pipeline: two CLIP encoders (the second with a projection and "!" padding)."""
    import tempfile

    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from sdstudio.testing.vocab import write_tiny_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        tokenizer_2 = CLIPTokenizer.from_pretrained(tmp, model_max_length=77, pad_token="!")
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=32,
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
    )
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sdxl_reference(pipe: Any, prompt: str, negative: str | None) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        result: tuple[torch.Tensor, ...] = pipe.encode_prompt(
            prompt, device="cpu", do_classifier_free_guidance=True, negative_prompt=negative
        )
    return result


def test_sdxl_plain_prompt_encodes_exactly_as_the_pipeline(sdxl: Any) -> None:
    result = embeds(sdxl, "a red boat", "ugly")
    expected = sdxl_reference(sdxl, "a red boat", "ugly")
    assert result.prompt_embeds.shape == (1, 77, 64)
    assert result.pooled_prompt_embeds.shape == (1, 32)
    got = (
        result.prompt_embeds,
        result.negative_prompt_embeds,
        result.pooled_prompt_embeds,
        result.negative_pooled_prompt_embeds,
    )
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    # An empty negative prompt gives zeros, as the model's config asks.
    empty = embeds(sdxl, "a red boat", "")
    assert not empty.negative_prompt_embeds.any() and not empty.negative_pooled_prompt_embeds.any()


def test_sdxl_weighted_long_prompt_generates(sdxl: Any) -> None:
    plain = embeds(sdxl, "a red boat")
    weighted = embeds(sdxl, "a (red:1.4) boat")
    assert not torch.equal(weighted.prompt_embeds, plain.prompt_embeds)
    assert torch.equal(weighted.pooled_prompt_embeds, plain.pooled_prompt_embeds)  # unweighted
    long = embeds(sdxl, words(100), "ugly")
    assert long.prompt_embeds.shape == long.negative_prompt_embeds.shape == (1, 154, 64)
    arguments = prompt_embeds.prompt_arguments(sdxl, "a (red:1.4) boat", "", 1)
    assert set(arguments) == {
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }
    # Clip skip does not apply to SDXL (A1111's default).
    assert prompt_embeds.prompt_arguments(sdxl, "a red boat", "", 2)["prompt"] == "a red boat"
    images = sdxl(
        **long.as_kwargs(),
        num_inference_steps=2,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(1),
        output_type="np",
    ).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


# --- the request and its A1111 metadata -------------------------------------


def test_clip_skip_is_validated_and_kept_in_json() -> None:
    request = GenerationRequest(model="m", prompt="p", clip_skip=2, seed=1)
    assert GenerationRequest.from_json(request.to_json()) == request
    assert GenerationRequest.from_dict({"model": "m", "prompt": "p"}).clip_skip == 1
    for bad in (0, 13, 1.5, True):
        with pytest.raises(InvalidRequest):
            GenerationRequest(model="m", prompt="p", clip_skip=bad)  # type: ignore[arg-type]


def test_clip_skip_goes_through_a1111_parameters() -> None:
    request = GenerationRequest(model="m", prompt="p", seed=1, clip_skip=2)
    text = format_parameters(request, model_name="m")
    assert "Clip skip: 2" in text
    assert parse_parameters(text).clip_skip == 2
    assert "Clip skip" not in format_parameters(request.replace(clip_skip=1))
    assert parse_parameters("p\nSteps: 20, Seed: 1, Clip skip: 99, Size: 64x64").clip_skip == 1


# --- the engine --------------------------------------------------------------


def request_for(model: Path, **changes: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a red boat",
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 11,
    }
    values.update(changes)
    return GenerationRequest(model=str(model), **values)


def pixels_of(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(next(engine.generate(request)).image)


def test_plain_prompts_give_the_pixels_of_a_text_prompt(
    engine: Engine, tiny_model: Path, manager: Any
) -> None:
    request = request_for(tiny_model, negative_prompt="ugly")
    ours = pixels_of(engine, request)
    pipe = manager.pipeline(str(tiny_model), Mode.TXT2IMG)
    pipe.scheduler = samplers.make_scheduler(
        request.sampler, request.schedule, manager.scheduler_config, seed=request.seed
    )
    direct = pipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(request.seed),
        width=64,
        height=64,
        output_type="pil",
    ).images[0]
    assert np.array_equal(ours, np.asarray(direct))


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "a (red:1.5) [boat]"},
        {"prompt": words(120), "negative_prompt": "ugly"},
        {"prompt": "a red boat BREAK sea", "mode": Mode.IMG2IMG},
        {"clip_skip": 2},
    ],
)
def test_weighted_prompts_generate_reproducibly(
    engine: Engine, tiny_model: Path, init_image: Path, changes: dict[str, Any]
) -> None:
    if changes.get("mode") is Mode.IMG2IMG:
        changes = {**changes, "init_image": str(init_image), "strength": 0.7}
    without = {k: v for k, v in changes.items() if k not in ("prompt", "clip_skip")}
    plain = pixels_of(engine, request_for(tiny_model, **without))
    request = request_for(tiny_model, **changes)
    first = pixels_of(engine, request)
    assert np.array_equal(first, pixels_of(engine, request))
    assert not np.array_equal(first, plain)


def test_a_batch_encodes_its_prompt_once(
    engine: Engine, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = prompt_embeds.encode_prompts

    def counting(pipe: Any, prompt: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(prompt)
        return original(pipe, prompt, *args, **kwargs)

    monkeypatch.setattr(prompt_embeds, "encode_prompts", counting)
    batch = list(engine.generate(request_for(tiny_model, prompt="(red) boat", batch_size=3)))
    assert len(batch) == 3 and calls == ["(red) boat"]
    alone = pixels_of(engine, batch[2].record.request)
    assert np.array_equal(alone, np.asarray(batch[2].image))
    assert calls == ["(red) boat"] * 2
