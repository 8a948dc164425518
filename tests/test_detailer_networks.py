"""A detailer prompt that names a LoRA: the LoRA repaints the faces only; the first pass of
every image of a batch runs without it, and the record names it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdstudio.engine.generation import Engine
from sdstudio.engine.inpaint import blur_mask
from sdstudio.engine.networks import Networks
from sdstudio.engine.refine.detailer_settings import Detailer
from sdstudio.engine.refine.face_detection import Detection
from sdstudio.engine.request import GenerationRequest

FACE = Detection(40, 24, 64, 52, 0.8)


class OneFace:
    name = "face"

    def detect(self, image, confidence: float) -> list[Detection]:
        return [FACE]


@pytest.fixture(scope="module")
def lora_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one LoRA of random weights for the tiny model (``tiny``)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = tmp_path_factory.mktemp("detail-loras")
    torch.manual_seed(1)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    modules = ["to_q", "to_k", "to_v", "to_out.0"]
    pipe.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=modules)
    )
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        weight_name="tiny.safetensors",
        safe_serialization=True,
    )
    return folder


@pytest.fixture
def lora_engine(lora_dir: Path, tmp_path: Path) -> Engine:
    """An engine with its own pipeline manager (LoRAs must not reach the shared one)."""
    from sdstudio.engine.devices import choose_device
    from sdstudio.engine.pipelines import PipelineManager

    manager = PipelineManager(choose_device("cpu"))
    networks = Networks(lambda: [lora_dir], lambda: [], manager.hash_cache)
    return Engine(
        manager, tmp_path / "inputs", networks=networks, detectors=lambda _name: OneFace()
    )


def images(engine: Engine, model: Path, detailer: Detailer | None) -> list:
    request = GenerationRequest(
        model=str(model),
        prompt="a portrait",
        sampler="Euler",
        schedule="Automatic",
        steps=4,
        seed=8,
        width=96,
        height=64,
        batch_size=2,
        detailer=detailer,
    )
    return list(engine.generate(request))


@pytest.mark.slow  # one of the heaviest end-to-end runs
def test_a_detailer_lora_repaints_only_the_faces(lora_engine: Engine, tiny_model: Path) -> None:
    plain = images(lora_engine, tiny_model, None)
    with_lora = images(lora_engine, tiny_model, Detailer(prompt="a face <lora:tiny:1>"))
    without = images(lora_engine, tiny_model, Detailer(prompt="a face"))
    mask = Detailer().dilate
    from sdstudio.engine.refine.detailer import face_mask

    face = face_mask((96, 64), FACE, mask)
    assert face is not None
    reach = np.asarray(blur_mask(face, Detailer().mask_blur)) > 0
    x0, y0, x1, y1 = FACE.box
    for first, lora, no_lora in zip(plain, with_lora, without, strict=True):
        a, b, c = (np.asarray(r.image, dtype=np.int16) for r in (first, lora, no_lora))
        assert np.array_equal(a[~reach], b[~reach])  # each first pass ran without the LoRA
        assert np.abs(b[y0:y1, x0:x1] - c[y0:y1, x0:x1]).mean() > 1  # the faces with it
        loras = lora.record.extra["loras"]
        assert [(use["name"], use["weight"]) for use in loras] == [("tiny", 1.0)]
        assert "loras" not in no_lora.record.extra
