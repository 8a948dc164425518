"""Stability Matrix, TensorArt and web demo settings, and the readers' strict shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.metadata import read_image_settings
from sdstudio.engine.metadata.comfyui import read_comfyui
from sdstudio.engine.metadata.stabilitymatrix import read_stability_matrix
from sdstudio.engine.metadata.tensorart import read_tensorart
from sdstudio.engine.metadata.webdemo import read_webdemo
from tests.metadata_samples import A1111_TEXT, summary
from tests.metadata_samples_more import (
    FOOOCUS_JSON,
    SMALL_GRAPH,
    STABILITY_MATRIX_A1111,
    STABILITY_MATRIX_EXPECTED,
    STABILITY_MATRIX_JSON,
    STABILITY_MATRIX_PROJECT,
    TENSORART_DATA,
    TENSORART_EXPECTED,
    WEBDEMO_EXPECTED,
    WEBDEMO_SETTINGS,
    write_text_png,
)


def test_stability_matrix_json_is_read(tmp_path: Path) -> None:
    path = write_text_png(
        tmp_path / "sm.png", {"parameters-json": json.dumps(STABILITY_MATRIX_JSON)}
    )
    found = read_image_settings(path)
    assert (found.source, summary(found.request)) == ("stabilitymatrix", STABILITY_MATRIX_EXPECTED)
    assert found.request.model == "ExampleMix7"
    assert found.model_name == "ExampleMix7.safetensors"
    assert found.model_hash == STABILITY_MATRIX_JSON["ModelHash"]


def test_stability_matrix_json_wins_over_its_a1111_text(tmp_path: Path) -> None:
    texts = {
        "parameters": STABILITY_MATRIX_A1111,
        "parameters-json": json.dumps(STABILITY_MATRIX_JSON),
        "smproj": STABILITY_MATRIX_PROJECT,
    }
    found = read_image_settings(write_text_png(tmp_path / "sm.png", texts))
    assert (found.source, summary(found.request)) == ("stabilitymatrix", STABILITY_MATRIX_EXPECTED)
    assert any(
        "AUTOMATIC1111 parameters" in note and "parameters-json" in note for note in found.notes
    )
    assert any("smproj" in note for note in found.notes)


def test_stability_matrix_unset_zeros_are_not_read() -> None:
    data = {**STABILITY_MATRIX_JSON, "Steps": 0, "CfgScale": 0.0, "Width": 0, "Height": 0}
    parsed = read_stability_matrix({"parameters-json": json.dumps(data)}, (832, 1216))
    assert {"steps", "guidance_scale"}.isdisjoint(parsed.read)
    assert (parsed.request.width, parsed.request.height) == (832, 1216)
    assert not any("Steps 0" in note for note in parsed.notes)


def test_tensorart_generation_data_is_read(tmp_path: Path) -> None:
    path = write_text_png(tmp_path / "ta.png", {"generation_data": json.dumps(TENSORART_DATA)})
    found = read_image_settings(path)
    assert (found.source, summary(found.request)) == ("tensorart", TENSORART_EXPECTED)
    assert found.request.model == "juggernautXL_v9"
    assert found.request.clip_skip == 2
    assert found.model_hash == "C9E3E68F89"


def test_tensorart_generation_data_wins_over_its_comfyui_graph(tmp_path: Path) -> None:
    texts = {"generation_data": json.dumps(TENSORART_DATA), "prompt": json.dumps(SMALL_GRAPH)}
    found = read_image_settings(write_text_png(tmp_path / "ta.png", texts))
    assert (found.source, summary(found.request)) == ("tensorart", TENSORART_EXPECTED)
    assert any("ComfyUI graph" in note and "generation_data" in note for note in found.notes)


def test_tensorart_sampler_name_and_model_as_text() -> None:
    data = {"prompt": "a fox", "steps": 10, "samplerName": "euler_ancestral", "baseModel": "x.ckpt"}
    parsed = read_tensorart({"generation_data": json.dumps(data)}, (512, 512))
    assert (parsed.request.sampler, parsed.request.model, parsed.model_hash) == ("Euler a", "x", "")


@pytest.mark.parametrize("key", ["parameters", "Comment", "Description"])
def test_webdemo_settings_are_read(tmp_path: Path, key: str) -> None:
    path = write_text_png(tmp_path / "demo.png", {key: json.dumps(WEBDEMO_SETTINGS)})
    found = read_image_settings(path)
    assert (found.source, summary(found.request)) == ("webdemo", WEBDEMO_EXPECTED)
    assert found.request.model == "cagliostrolab/animagine-xl-3.1"
    assert any(key in note for note in found.notes) == (key != "parameters")


def test_webdemo_diffusers_scheduler_class_and_size() -> None:
    data = {
        "prompt": "a lighthouse",
        "guidance_scale": 3.5,
        "scheduler": "DPMSolverMultistepScheduler",
        "width": 1024,
        "height": 768,
        "model": "sd_xl_base_1.0.safetensors",
    }
    parsed = read_webdemo({"parameters": json.dumps(data)}, (64, 96))
    request = parsed.request
    assert (request.sampler, request.schedule, request.width, request.height) == (
        "DPM++ 2M",
        "Automatic",
        1024,
        768,
    )
    assert request.model == "sd_xl_base_1.0"
    assert "steps" not in parsed.read


def test_webdemo_a1111_sampler_with_schedule() -> None:
    data = {**WEBDEMO_SETTINGS, "sampler": "DPM++ 2M SDE Karras"}
    parsed = read_webdemo({"parameters": json.dumps(data)})
    assert (parsed.request.sampler, parsed.request.schedule) == ("DPM++ 2M SDE", "Karras")


def _texts(kind: str) -> dict[str, str]:
    return {
        "comfyui": {"prompt": json.dumps(SMALL_GRAPH)},
        "a1111": {"parameters": A1111_TEXT},
        "fooocus": {"parameters": json.dumps(FOOOCUS_JSON), "fooocus_scheme": "fooocus"},
        "fooocus_unmarked": {"parameters": json.dumps(FOOOCUS_JSON)},
        "stabilitymatrix": {"parameters-json": json.dumps(STABILITY_MATRIX_JSON)},
        "tensorart": {"generation_data": json.dumps(TENSORART_DATA)},
        "webdemo": {"parameters": json.dumps(WEBDEMO_SETTINGS)},
    }[kind]


@pytest.mark.parametrize(
    ("reader", "kinds"),
    [
        (read_stability_matrix, ["comfyui", "a1111", "fooocus", "tensorart", "webdemo"]),
        (read_tensorart, ["comfyui", "a1111", "fooocus", "stabilitymatrix", "webdemo"]),
        (
            read_webdemo,
            ["comfyui", "a1111", "fooocus", "fooocus_unmarked", "stabilitymatrix", "tensorart"],
        ),
    ],
)
def test_readers_refuse_other_formats(reader: object, kinds: list[str]) -> None:
    for kind in kinds:
        with pytest.raises(InvalidRequest):
            reader(_texts(kind), (64, 96))  # type: ignore[operator]


def test_webdemo_refuses_json_without_its_settings() -> None:
    for data in ({"prompt": "a fox"}, {"prompt": 3, "num_inference_steps": 4}, ["prompt"]):
        with pytest.raises(InvalidRequest):
            read_webdemo({"Comment": json.dumps(data)})


def test_unmarked_fooocus_json_stays_fooocus(tmp_path: Path) -> None:
    path = write_text_png(tmp_path / "f.png", {"parameters": json.dumps(FOOOCUS_JSON)})
    assert read_image_settings(path).source == "fooocus"


@pytest.mark.parametrize("scheduler", ["normal", "simple", "ddim_uniform"])
def test_comfyui_schedule_sdstudio_lacks_gets_a_note(scheduler: str) -> None:
    graph = json.loads(json.dumps(SMALL_GRAPH))
    graph["3"]["inputs"]["scheduler"] = scheduler
    parsed = read_comfyui({"prompt": json.dumps(graph)})
    assert parsed.request.schedule == "Automatic"
    assert any(f"no {scheduler} schedule" in note for note in parsed.notes)
