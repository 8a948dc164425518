"""Tiny ComfyUI model trees of the flow families: a transformer file alone in
``models/diffusion_models``, its text encoders in ``models/text_encoders`` and its VAE
in ``models/vae``, as ComfyUI users keep them.

The parts have matching widths (the transformer's text widths are its encoders'), real
vocabulary sizes (so the tokenizers shipped with the app fit them) and the original
(Black Forest Labs, Stability AI, ComfyUI) tensor names. The same seed gives the same
files.
"""

from __future__ import annotations

from pathlib import Path

from sdstudio.testing.tiny_denoiser_files import (
    build_tiny_denoiser,
    write_denoiser_file,
    write_denoiser_gguf,
)
from sdstudio.testing.tiny_parts import CLIP_HIDDEN, QWEN_HIDDEN, T5_HIDDEN
from sdstudio.testing.tiny_text_encoder_files import (
    write_tiny_clip,
    write_tiny_qwen3,
    write_tiny_qwen25_vl,
    write_tiny_t5,
)
from sdstudio.testing.tiny_vae_files import write_tiny_vae

SD3_T5 = 3 * CLIP_HIDDEN + 32
QWEN3_LAYERS = 36
"""Qwen3 4B's depth: Flux.2 Klein reads its hidden layers 9, 18 and 27."""


def save_tiny_comfyui_model(
    root: str | Path,
    family: str,
    *,
    seed: int = 0,
    name: str = "",
    gguf: str = "",
    guidance_embeds: bool = False,
    fill: bool = False,
) -> Path:
    """Write a tiny ``family`` model into the ComfyUI tree at ``root`` (its parts are
    added beside those already there) and return the transformer file's path.

    ``gguf`` (``"F16"``, ``"Q8_0"``) writes the transformer as a GGUF file;
    ``guidance_embeds`` makes a Flux.1 transformer dev-like, ``fill`` a Flux.1 Fill one.
    """
    models = Path(root) / "models"
    for folder in ("checkpoints", "diffusion_models", "text_encoders", "vae"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    encoders = models / "text_encoders"
    overrides: dict[str, object] = {"guidance_embeds": True} if guidance_embeds else {}
    if fill:
        overrides.update(guidance_embeds=True, in_channels=384, out_channels=64)
    transformer = build_tiny_denoiser(family, seed=seed, **overrides)
    stem = name or f"tiny-{family}"
    if gguf:
        target = models / "diffusion_models" / f"{stem}-{gguf}.gguf"
        write_denoiser_gguf(target, family, transformer, kind=gguf)
    else:
        target = models / "diffusion_models" / f"{stem}.safetensors"
        write_denoiser_file(target, family, transformer, prefix="model.diffusion_model.")
    _write_text_encoders(encoders, family, seed)
    vae_kind = {"qwen-image": "qwen-image", "flux2-klein": "flux2"}.get(family, "kl16")
    write_tiny_vae(vae_kind, models / "vae" / f"tiny-{vae_kind}-vae.safetensors", seed)
    return target


def _write_text_encoders(folder: Path, family: str, seed: int) -> None:
    if family == "flux1":
        write_tiny_clip(folder / "clip_l.safetensors", width=CLIP_HIDDEN, seed=seed)
        write_tiny_t5(folder / "t5xxl_fp16.safetensors", width=T5_HIDDEN, seed=seed)
    elif family == "chroma":
        write_tiny_t5(folder / "t5xxl_fp16.safetensors", width=T5_HIDDEN, seed=seed)
    elif family == "sd3":
        write_tiny_clip(folder / "clip_l.safetensors", width=CLIP_HIDDEN, seed=seed)
        write_tiny_clip(folder / "clip_g.safetensors", width=2 * CLIP_HIDDEN, seed=seed + 1)
        write_tiny_t5(folder / "t5xxl_sd3.safetensors", width=SD3_T5, seed=seed)
    elif family in ("zimage", "flux2-klein"):
        # One Qwen3 4B file serves both, as in ComfyUI (qwen_3_4b.safetensors).
        write_tiny_qwen3(
            folder / "qwen_3_4b.safetensors", width=QWEN_HIDDEN, layers=QWEN3_LAYERS, seed=seed
        )
    elif family == "qwen-image":
        write_tiny_qwen25_vl(folder / "qwen_2.5_vl_7b.safetensors", width=QWEN_HIDDEN, seed=seed)
    else:
        raise ValueError(f"no tiny split layout for {family}")


def save_tiny_all_in_one(path: str | Path, family: str, *, seed: int = 0) -> Path:
    """Write a tiny all-in-one checkpoint of ``family`` (``"flux1"`` or ``"sd3"``): the
    transformer under ``model.diffusion_model.``, the text encoders under
    ``text_encoders.<name>.transformer.`` and the VAE under ``vae.``, as ComfyUI saves
    them (and as SD 3.5's own single files hold them)."""
    import tempfile

    from safetensors.torch import load_file, save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdstudio-aio-") as tmp:
        folder = Path(tmp)
        files = [
            write_denoiser_file(
                folder / "transformer.safetensors",
                family,
                build_tiny_denoiser(family, seed=seed),
                prefix="model.diffusion_model.",
            ),
            write_tiny_vae("kl16", folder / "vae.safetensors", seed),
        ]
        encoders = {"clip_l": CLIP_HIDDEN, "t5xxl": T5_HIDDEN if family == "flux1" else SD3_T5}
        if family == "sd3":
            encoders["clip_g"] = 2 * CLIP_HIDDEN
        for index, (name, width) in enumerate(encoders.items()):
            prefix = f"text_encoders.{name}.transformer."
            target = folder / f"{name}.safetensors"
            if name == "t5xxl":
                files.append(write_tiny_t5(target, width=width, seed=seed, prefix=prefix))
            else:
                files.append(write_tiny_clip(target, width=width, seed=seed + index, prefix=prefix))
        tensors = {}
        for file in files:
            loaded = load_file(str(file))
            if file.name == "vae.safetensors":
                loaded = {f"vae.{key}": value for key, value in loaded.items()}
            tensors.update(loaded)
        save_file(tensors, str(path))
    return path
