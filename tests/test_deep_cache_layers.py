"""DeepCache inside a block (the paper's caching): which layers a cached step runs, full
steps equal to the plain UNet, FreeU and control residuals, the ``layer`` setting in
requests, short forms, records and the Fast mode row, and an exact re-run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata.a1111 import format_parameters, read_parameters
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.speed.fast_mode import DEFAULT_LAYER, FastMode, parse_fast_mode

TIMESTEPS = (900, 700, 500, 300)


def _unet(three_levels: bool):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if three_levels:  # SDXL's shape: no attention at the top, two transformer layers below
        blocks = {
            "block_out_channels": (32, 32, 64),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 2),
        }
    else:  # SD 1.x / 2.x's shape: attention at the top, none at the bottom
        blocks = {
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        }
    return UNet2DConditionModel(
        **blocks,
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="module")
def sd_unet():
    return _unet(three_levels=False)


@pytest.fixture(scope="module")
def xl_unet():
    return _unet(three_levels=True)


def _inputs():
    import torch

    generator = torch.Generator().manual_seed(3)
    return torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 7, 32, generator=generator)


def _steps(unet, interval=None, branch=0, layer=None, **extra):
    """The UNet's output at each of :data:`TIMESTEPS`, plain or with DeepCache."""
    import torch

    from sdstudio.engine.speed.deep_cache import deep_cache

    sample, text = _inputs()

    def run() -> list:
        outputs = []
        for t in TIMESTEPS:  # the UNet pops the adapter's residuals from their list
            fresh = {k: list(v) if isinstance(v, list) else v for k, v in extra.items()}
            outputs.append(unet(sample, t, encoder_hidden_states=text, **fresh).sample)
        return outputs

    with torch.no_grad():
        if interval is None:
            return run()
        with deep_cache(unet, interval, branch, layer) as state:
            outputs = run()
        assert state.reused == sum(1 for i in range(len(TIMESTEPS)) if i % interval)
        return outputs


def _equal(first: list, second: list) -> list[bool]:
    import torch

    return [torch.equal(a, b) for a, b in zip(first, second, strict=True)]


def test_a_cached_step_runs_only_the_kept_layers(sd_unet) -> None:
    """Branch 0, layer 0 with 2 layers a block: the top down block's first layer, the top
    up block's last two layers; nothing deeper, no downsampler."""
    ran: list[str] = []
    handles = [
        module.register_forward_hook(lambda *_, name=name: ran.append(name))
        for name, module in sd_unet.named_modules()
        if name.endswith((".conv1", ".proj_in", ".conv")) and "blocks" in name
    ]
    try:
        _steps(sd_unet, interval=2, layer=0)
    finally:
        for handle in handles:
            handle.remove()
    steps = len(TIMESTEPS)
    counts = {name: ran.count(name) for name in set(ran)}
    cached_ones = {
        "down_blocks.0.resnets.0.conv1",
        "down_blocks.0.attentions.0.proj_in",
        "up_blocks.1.resnets.1.conv1",
        "up_blocks.1.resnets.2.conv1",
        "up_blocks.1.attentions.1.proj_in",
        "up_blocks.1.attentions.2.proj_in",
    }
    assert {name for name, count in counts.items() if count == steps} == cached_ones
    assert set(counts.values()) == {steps, steps // 2}  # the others ran on full steps only
    assert "down_blocks.0.downsamplers.0.conv" in counts
    assert "up_blocks.0.upsamplers.0.conv" in counts


@pytest.mark.parametrize(("three_levels", "branch", "layer"), [(False, 0, 0), (True, 1, 0)])
def test_full_steps_equal_the_plain_unet_and_interval_one_changes_nothing(
    sd_unet, xl_unet, three_levels: bool, branch: int, layer: int
) -> None:
    unet = xl_unet if three_levels else sd_unet
    plain = _steps(unet)
    assert all(_equal(_steps(unet, 1, branch, layer), plain))
    assert _equal(_steps(unet, 2, branch, layer), plain) == [True, False, True, False]
    assert all(_equal(_steps(unet), plain))  # the hooks are gone
    assert not any(
        getattr(module, "_diffusers_hook", None) and module._diffusers_hook.hooks
        for module in unet.modules()
    )


def test_caching_inside_differs_from_whole_blocks_until_the_last_layer(sd_unet) -> None:
    blocks = _steps(sd_unet, 2, 0, None)
    inside = _steps(sd_unet, 2, 0, 0)
    assert _equal(inside, blocks) == [True, False, True, False]
    # Keeping every down layer leaves the whole up block to run: the same computation.
    assert all(_equal(_steps(sd_unet, 2, 0, 1), blocks))


def test_with_freeu_the_cache_holds_the_features_before_it(xl_unet) -> None:
    """Branch 1 of the three-level UNet is an up block FreeU scales (in place)."""
    import torch

    from sdstudio.engine.speed.deep_cache import deep_cache

    xl_unet.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    try:
        plain = _steps(xl_unet)
        seen: list = []
        up = xl_unet.up_blocks[1]  # 3 layers; layer 0 keeps up layers 1 and 2
        handle = up.attentions[0].register_forward_hook(
            lambda _m, _i, output: seen.append(output[0].clone())
        )
        sample, text = _inputs()
        with torch.no_grad(), deep_cache(xl_unet, 2, 1, 0) as state:
            xl_unet(sample, TIMESTEPS[0], encoder_hidden_states=text)
            assert torch.equal(state.cached, seen[0])
        handle.remove()
        assert _equal(_steps(xl_unet, 2, 1, 0), plain) == [True, False, True, False]
        assert all(_equal(_steps(xl_unet, 2, 1, 1), _steps(xl_unet, 2, 1, None)))
    finally:
        xl_unet.disable_freeu()


def test_control_and_adapter_residuals_pass_through_cached_steps(sd_unet) -> None:
    import torch

    generator = torch.Generator().manual_seed(5)
    shapes = [(32, 8, 8)] * 3 + [(32, 4, 4)] + [(64, 4, 4)] * 2  # conv_in, layers, downsampler

    def noise(shape: tuple[int, ...]):
        return torch.randn(2, *shape, generator=generator)

    control = {
        "down_block_additional_residuals": tuple(noise(shape) for shape in shapes),
        "mid_block_additional_residual": noise((64, 4, 4)),
    }
    adapter_residuals = [noise((32, 8, 8)), noise((64, 4, 4))]
    for extra in (control, {"down_intrablock_additional_residuals": adapter_residuals}):
        plain = _steps(sd_unet, **extra)
        cached = _steps(sd_unet, 2, 0, 0, **extra)
        assert _equal(cached, plain) == [True, False, True, False]
        assert all(torch.isfinite(output).all() for output in cached)
    assert _equal(_steps(sd_unet, **control), _steps(sd_unet)) == [False] * len(TIMESTEPS)


def test_a_layer_the_block_does_not_have_is_refused(sd_unet) -> None:
    from sdstudio.engine.speed.deep_cache import check_unet, deep_cache

    with pytest.raises(InvalidRequest, match=r"DeepCache layer 2 is not a layer .* 0 to 1"):
        check_unet(sd_unet, 0, 2)
    with pytest.raises(InvalidRequest, match="DeepCache layer 3"), deep_cache(sd_unet, 2, 0, 3):
        pass
    assert not sd_unet._diffusers_hook.hooks


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"layer": -1}, "Fast layer must be between 0 and 3, not -1"),
        ({"layer": 1.5}, r"Fast layer must be a whole number \(or block\), not 1.5"),
        ({"layer": True}, "Fast layer must be a whole number"),
    ],
)
def test_bad_layers_are_refused(values, message) -> None:
    with pytest.raises(InvalidRequest, match=message):
        FastMode("deep-cache", **values)
    with pytest.raises(InvalidRequest, match=message):
        GenerationRequest.from_dict(
            {"model": "m", "prompt": "p", "fast": {"method": "deep-cache", **values}}
        )


def test_the_short_form_names_the_layer_or_the_whole_block() -> None:
    assert parse_fast_mode("deep-cache,interval=3,layer=0") == FastMode(
        "deep-cache", interval=3, layer=0
    )
    assert parse_fast_mode("deep-cache, layer=Block").layer is None
    assert parse_fast_mode("deep-cache,interval=2").layer == DEFAULT_LAYER
    with pytest.raises(InvalidRequest, match="Fast layer 'top' is not a number"):
        parse_fast_mode("deep-cache,layer=top")
    with pytest.raises(InvalidRequest, match=r"'layer=0' is not one of token-merging's"):
        parse_fast_mode("token-merging,layer=0")


def test_the_layer_is_recorded_and_a_record_without_it_caches_whole_blocks() -> None:
    request = GenerationRequest(model="m", prompt="p", fast=FastMode("deep-cache", layer=0))
    text = format_parameters(request, model_name="m")
    assert "Fast mode: deep-cache, Fast interval: 3, Fast branch: 0, Fast layer: 0" in text
    assert read_parameters(text).request.fast == request.fast
    assert FastMode("deep-cache", layer=0).describe() == "deep-cache, interval 3, branch 0, layer 0"
    older = text.replace(", Fast layer: 0", "")
    assert read_parameters(older).request.fast == FastMode("deep-cache", layer=None)
    whole = request.replace(fast=FastMode("deep-cache", layer=None))
    assert "Fast layer" not in format_parameters(whole)
    data = request.to_dict()
    assert GenerationRequest.from_dict(data) == request
    del data["fast"]["layer"]
    assert GenerationRequest.from_dict(data).fast == FastMode("deep-cache", layer=None)


def test_caching_inside_reruns_exactly_through_the_engine(engine, tiny_model: Path) -> None:
    def pixels(fast: FastMode | None):
        request = GenerationRequest(
            model=str(tiny_model),
            prompt="a red house",
            seed=7,
            steps=4,
            width=64,
            height=64,
            fast=fast,
        )
        (generated,) = list(engine.generate(request))
        return np.asarray(generated.image), generated.record

    full, _ = pixels(None)
    fast = FastMode("deep-cache", interval=2, layer=0)
    image, record = pixels(fast)
    assert record.request.fast == fast and not np.array_equal(image, full)
    again = read_parameters(format_parameters(record.request)).request.fast
    assert again == fast
    assert np.array_equal(pixels(again)[0], image)
    assert np.array_equal(pixels(None)[0], full)
    with pytest.raises(InvalidRequest, match=r"DeepCache layer 1 is not a layer .* 0 to 0"):
        pixels(FastMode("deep-cache", layer=1))


def test_the_row_chooses_and_shows_where_deep_cache_caches(qtbot) -> None:
    from sdstudio.ui.fast_mode_row import INSIDE, WHOLE, FastModeRow

    row = FastModeRow()
    qtbot.addWidget(row)
    row.mode.setCurrentIndex(row.mode.findData("deep-cache"))
    assert row.values()["fast"].layer == DEFAULT_LAYER
    row.cache.setCurrentIndex(row.cache.findData(WHOLE))
    assert row.values()["fast"] == FastMode("deep-cache", layer=None)
    row.cache.setCurrentIndex(row.cache.findData(INSIDE))
    assert row.values()["fast"] == FastMode("deep-cache", layer=0)
    row.load(FastMode("deep-cache", interval=4, layer=1))
    assert row.values()["fast"] == FastMode("deep-cache", interval=4, layer=1)
    assert row.describe() == "fast: deep-cache, interval 4, branch 0, layer 1"
    row.load(FastMode("deep-cache", interval=5, layer=None))
    assert row.cache.currentData() == WHOLE
    assert row.values()["fast"] == FastMode("deep-cache", interval=5, layer=None)
    row.load(FastMode("token-merging"))
    assert row.cache.isHidden()
