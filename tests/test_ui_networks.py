"""Choosing LoRAs, embeddings and a VAE per model in the window."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sdstudio.engine.models.catalog import ModelEntry
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.prompts import toggle_lora_tag, toggle_word
from sdstudio.engine.request import GenerationRequest


def entry(name: str, kind: str, path: str, family: str = "sd1") -> ModelEntry:
    return ModelEntry(name, kind, "safetensors", path, 1000, "folder", family, "SD 1.x")


ENTRIES = [
    entry("model-a", "checkpoint", "/models/a.safetensors"),
    entry("model-b", "checkpoint", "/models/b.safetensors"),
    entry("detail", "lora", "/models/Lora/detail.safetensors"),
    entry("pixel_art", "lora", "/models/Lora/pixel_art.safetensors"),
    entry("badhands", "embedding", "/models/embeddings/badhands.pt"),
    entry("clear-vae", "vae", "/models/VAE/clear-vae.safetensors"),
]
XL_ENTRIES = [
    ModelEntry(
        "model-xl", "checkpoint", "safetensors", "/m/xl.safetensors", 1, "folder", "sdxl", "SDXL"
    ),
    ModelEntry(
        "aaa-xl-lora", "lora", "safetensors", "/m/Lora/x.safetensors", 1, "folder", "sdxl", "SDXL"
    ),
]


@pytest.mark.parametrize(
    ("prompt", "added", "removed"),
    [
        ("", "<lora:detail:1>", ""),
        ("a cat", "a cat <lora:detail:1>", "a cat"),
        ("a cat <lora:Detail:0.5>, sunset", None, "a cat, sunset"),
        ("<lora:detail:1> a cat <lora:x:1>", None, "a cat <lora:x:1>"),
    ],
)
def test_toggling_a_lora_tag(prompt: str, added: str | None, removed: str) -> None:
    once = toggle_lora_tag(prompt, "detail")
    if added is None:
        assert once == removed
    else:
        assert once == added
        assert toggle_lora_tag(once, "detail") == removed


def test_toggling_an_embedding_word() -> None:
    assert toggle_word("a cat", "badhands") == "a cat badhands"
    assert toggle_word("a cat, badhands, blurry", "BadHands") == "a cat, blurry"
    assert toggle_word("badhandsx", "badhands") == "badhandsx badhands"


def test_pickers_write_into_the_prompts(window) -> None:
    panel = window.panel
    window.show_models(ENTRIES)
    panel.set_model("/models/a.safetensors")  # listing models chooses none
    assert panel.loras.names() == ["detail", "pixel_art"]
    assert panel.embeddings.names() == ["badhands"]
    panel.loras.set_filter("pix")
    assert panel.loras.visible_names() == ["pixel_art"]
    panel.prompt.setPlainText("a castle")
    panel.loras.chosen.emit("pixel_art")
    assert panel.prompt.toPlainText() == "a castle <lora:pixel_art:1>"
    panel.loras.set_filter("")
    assert panel.loras.ticked_names() == ["pixel_art"]  # shown as in the prompt
    assert panel.request().prompt == "a castle <lora:pixel_art:1>"
    panel.loras.chosen.emit("pixel_art")
    assert panel.prompt.toPlainText() == "a castle"
    panel.negative.setPlainText("blurry")
    panel._last_prompt_edit = panel.negative  # focus is unreliable offscreen; set as FocusIn does
    panel.embeddings.chosen.emit("badhands")
    assert panel.negative.toPlainText() == "blurry badhands"
    panel.embeddings.set_filter("")
    assert panel.embeddings.ticked_names() == ["badhands"]
    assert panel.prompt.toPlainText() == "a castle"


def test_empty_pickers_say_how_to_add_files(window) -> None:
    window.show_models(ENTRIES[:2])
    assert window.panel.loras.names() == []
    assert "Manage" in window.panel.loras.toolTip()


def test_the_vae_is_remembered_for_each_model(qtbot, window) -> None:
    panel = window.panel
    window.show_models(ENTRIES)
    panel.set_model_vaes({})
    panel.set_model("/models/a.safetensors")
    assert panel.vae.currentText() == "Model's own"
    index = panel.vae.findText("clear-vae")
    panel.vae.setCurrentIndex(index)
    with qtbot.waitSignal(panel.vae_chosen) as chosen:
        panel.vae.activated.emit(index)
    assert chosen.args == ["/models/a.safetensors", "/models/VAE/clear-vae.safetensors"]
    assert panel.request().vae == "/models/VAE/clear-vae.safetensors"
    panel.set_model("/models/b.safetensors")
    assert panel.vae.currentText() == "Model's own"
    assert panel.request().vae == ""
    panel.set_model("/models/a.safetensors")
    assert panel.vae.currentText() == "clear-vae"


def test_a_rescan_drops_vaes_that_are_gone_but_keeps_the_choice(window) -> None:
    panel = window.panel
    window.show_models([*ENTRIES, entry("old-vae", "vae", "/models/VAE/old.safetensors")])
    panel.vae.select("/models/VAE/clear-vae.safetensors")
    window.show_models([e for e in ENTRIES if e.kind != "vae"])
    items = [panel.vae.itemText(i) for i in range(panel.vae.count())]
    assert items == ["Model's own", "clear-vae.safetensors"]  # the choice, shown by file name
    assert panel.vae.value() == "/models/VAE/clear-vae.safetensors"


def test_loading_a_request_shows_its_vae_even_if_not_found(window) -> None:
    window.show_models(ENTRIES)
    request = GenerationRequest(model="/models/b.safetensors", prompt="x", vae="someone-else.pt")
    window.panel.load(request)
    assert window.panel.vae.currentText() == "someone-else.pt"
    assert window.panel.request().vae == "someone-else.pt"


def test_a_generation_uses_the_vae_chosen_in_the_window(
    qtbot, window, tiny_model: Path, paths: AppPaths
) -> None:
    """The scan finds the VAE file; picking it for the model changes the saved image."""
    import json

    from safetensors.torch import load_file, save_file

    from sdstudio.engine.settings import load_settings
    from sdstudio.testing.checkpoints import convert_vae_to_original
    from sdstudio.ui.model_list import ModelListLoader

    state = load_file(str(tiny_model / "vae" / "diffusion_pytorch_model.safetensors"))
    config = json.loads((tiny_model / "vae" / "config.json").read_text())
    changed = {key: value * 0.9 for key, value in state.items()}
    (paths.models_dir / "VAE").mkdir(parents=True)
    save_file(
        convert_vae_to_original(changed, config), paths.models_dir / "VAE" / "dim.safetensors"
    )
    loader = ModelListLoader(paths, load_settings(paths))
    loader.loaded.connect(window.show_models)
    with qtbot.waitSignal(loader.loaded, timeout=30_000):
        loader.refresh()
    loader.shutdown()
    panel = window.panel
    request = GenerationRequest(
        model=str(tiny_model), prompt="a lighthouse", steps=2, width=64, height=64, seed=3
    )
    panel.load(request)
    images = []
    for vae in ("", "dim"):
        panel.vae.setCurrentIndex(panel.vae.findText(vae or "Model's own"))
        with qtbot.waitSignal(window.controller.finished, timeout=60_000) as done:
            window.generate()
        images.append(Path(done.args[1][0]))
    with Image.open(images[0]) as own, Image.open(images[1]) as dim:
        assert "VAE" not in own.info["parameters"]
        assert "VAE: dim.safetensors" in dim.info["parameters"]
        assert own.tobytes() != dim.tobytes()


def test_files_for_another_family_are_listed_last_and_cannot_be_picked(window) -> None:
    panel = window.panel
    window.show_models(ENTRIES + XL_ENTRIES)
    panel.set_model("/models/a.safetensors")  # SD 1.x
    panel.loras.set_filter("")
    assert panel.loras.visible_names() == ["detail", "pixel_art", "aaa-xl-lora"]
    assert panel.loras.enabled_names() == ["detail", "pixel_art"]
    panel.set_model("/m/xl.safetensors")
    panel.loras.set_filter("")
    assert panel.loras.visible_names() == ["aaa-xl-lora", "detail", "pixel_art"]
    assert panel.loras.enabled_names() == ["aaa-xl-lora"]
    panel.prompt.setPlainText("a cat <lora:detail:1>")  # pasted: it can still be taken out
    panel.loras.set_filter("")
    assert panel.loras.enabled_names() == ["aaa-xl-lora", "detail"]
    panel.model.setEditText("/somewhere/unlisted.safetensors")
    panel.loras.set_filter("")
    assert len(panel.loras.enabled_names()) == 3  # unknown model: nothing is excluded


def test_the_hypernet_button_shows_when_hypernetworks_are_found(qtbot) -> None:
    from sdstudio.ui.prompt_panel import PromptPanel

    panel = PromptPanel()
    qtbot.addWidget(panel)
    assert panel.hypernets.isHidden()  # none found: no room taken
    panel.set_networks([], [], [], [], [("anime_3", "/h/anime_3.pt", "", "")])
    assert not panel.hypernets.isHidden() and panel.hypernets.names() == ["anime_3"]
    panel.prompt.setPlainText("a castle")
    panel.hypernets.chosen.emit("anime_3")
    assert panel.prompt.toPlainText() == "a castle <hypernet:anime_3:1>"
    panel.hypernets.set_filter("")
    assert panel.hypernets.ticked_names() == ["anime_3"]
    panel.hypernets.chosen.emit("anime_3")
    assert panel.prompt.toPlainText() == "a castle"
    panel.set_networks([], [], [], [])
    assert panel.hypernets.isHidden()
