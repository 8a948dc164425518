"""Loading models and keeping one in memory.

One model is loaded at a time. Text-to-image, image-to-image and inpainting
share its weights through ``from_pipe``; loading another model frees the old
weights first, so memory does not grow as users switch.

A manager is used from one thread at a time (the worker that owns it).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdstudio.engine.compiled import DenoiserCompiler, denoiser, is_compiled
from sdstudio.engine.cuda_path import cuda_layout
from sdstudio.engine.devices import DeviceConfig
from sdstudio.engine.errors import ModelError, first_line
from sdstudio.engine.families import ModelFamily, family_of_pipeline, prepared
from sdstudio.engine.families.sd import SD1
from sdstudio.engine.hashing import HashCache
from sdstudio.engine.memory import (
    MemoryPlan,
    free_memory,
    place,
    plan_before_loading,
    plan_memory,
    weights_bytes,
)
from sdstudio.engine.models.lookup import ModelFinder, display_name, hf_repo_id
from sdstudio.engine.models.split_layout import SplitModel, assemble
from sdstudio.engine.pipeline_sharing import share_pipeline
from sdstudio.engine.precision import cpu_layout, model_precision
from sdstudio.engine.request import Mode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """The model in memory."""

    path: Path
    name: str
    single_file: bool
    inpainting: bool
    family: ModelFamily = SD1
    split: SplitModel | None = None
    """The part files it was assembled from, for a transformer kept alone."""


class PipelineManager:
    """Loads models and hands out pipelines for each mode, sharing weights."""

    def __init__(
        self,
        device: DeviceConfig,
        *,
        single_file_config: Path | None = None,
        hash_cache: HashCache | None = None,
        memory_mode: str = "auto",
        find_model: Callable[[str], Path] | None = None,
        compile_cache: Path | None = None,
    ) -> None:
        """``find_model`` turns a request's model (a path or a name) into a path;
        without it only absolute paths are found (see :class:`ModelFinder`).
        ``compile_cache`` keeps a compiled denoiser's kernels between starts."""
        self.device = device
        self.compiler = DenoiserCompiler(compile_cache)
        self.single_file_config = single_file_config
        self.memory_mode = memory_mode
        self.memory_plan = MemoryPlan()
        self._hashes = hash_cache or HashCache(None)
        self._model: LoadedModel | None = None
        self._pipes: dict[str, Any] = {}
        self._scheduler_config: dict[str, Any] = {}
        self._hash: str | None = None
        self._own_vae: Any = None
        """The model's own VAE while an override replaces it."""
        self._vae: Path | None = None
        self._unload_listeners: list[Callable[[], None]] = []
        self._find_model = find_model or ModelFinder()

    @property
    def hash_cache(self) -> HashCache:
        """The cache of file hashes (models, LoRAs, embeddings)."""
        return self._hashes

    def add_unload_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the model in memory is unloaded."""
        self._unload_listeners.append(listener)

    @property
    def model(self) -> LoadedModel | None:
        """The model in memory, if any."""
        return self._model

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """The loaded model's own scheduler config (its training schedule)."""
        return dict(self._scheduler_config)

    def model_hash(self) -> str:
        """A1111's hash of the loaded single-file model; empty for folders."""
        if self._model is None or not self._model.single_file:
            return ""
        if self._hash is None:
            self._hash = self._hashes.short_hash(self._model.path)
        return self._hash

    @property
    def vae(self) -> Path | None:
        """The VAE file that replaces the model's own, if any."""
        return self._vae

    def vae_hash(self) -> str:
        """A1111's ``VAE hash`` of the override file; empty without one or for a folder."""
        if self._vae is None or not self._vae.is_file():
            return ""
        return self._hashes.short_hash(self._vae)

    def find_model(self, model: str) -> Path:
        """The path of a request's model (a path or a name)."""
        return self._find_model(model)

    def pipeline(
        self,
        model: str,
        mode: Mode,
        on_status: Callable[[str], None] | None = None,
        *,
        vae: Path | None = None,
        split: SplitModel | None = None,
    ) -> Any:
        """The pipeline for ``mode`` on ``model``, loading the model if needed.

        An inpainting model (9-channel UNet, Flux.1 Fill) serves every mode through its
        inpainting pipeline; the engine then masks the whole image. ``vae``
        replaces the model's own VAE (``None``: the model's own). ``split`` gives the
        part files of a model kept as a transformer file alone.
        """
        path = self._find_model(model)
        if self._model is None or self._model.path != path or self._model.split != split:
            self.unload()
            if on_status:
                on_status(f"Loading {hf_repo_id(path) or path.name}…")
            self._load(path, split, on_status)
        assert self._model is not None
        if vae != self._vae:
            self._switch_vae(vae, on_status)
        task = "inpaint" if self._model.inpainting else _TASKS[mode]
        if task not in self._pipes:
            self._pipes[task] = self._derive(task)
        return self._pipes[task]

    def use_device(self, config: DeviceConfig) -> None:
        """Run the next models as ``config`` says (a re-run in its recorded precision, then
        the app's own choice again); a loaded model made under another choice is unloaded."""
        now = self.device
        if (now.device, now.chosen_precision, now.cpu_bf16_unet) == (
            config.device,
            config.chosen_precision,
            config.cpu_bf16_unet,
        ):
            if now.compile != config.compile:  # the loaded model compiles (or not) in place
                self.device = replace(now, compile=config.compile)
                if self._pipes:
                    self.compiler.apply(next(iter(self._pipes.values())), config.compile)
            return
        self.unload()
        self.device = config

    def device_in_use(self) -> DeviceConfig:
        """The device config the loaded model runs under, as an image records it: not
        compiled where compiling failed."""
        pipe = next(iter(self._pipes.values()), None)
        if not self.device.compile or (pipe is not None and is_compiled(denoiser(pipe))):
            return self.device
        return replace(self.device, compile=False)

    def _switch_vae(self, vae: Path | None, on_status: Callable[[str], None] | None) -> None:
        """Put ``vae`` (or the model's own) into every pipeline of the model."""
        base = next(iter(self._pipes.values()))
        own = self._own_vae if self._own_vae is not None else base.vae
        if vae is None:
            replacement = own
        else:
            if on_status:
                on_status(f"Loading the VAE {vae.name}…")
            replacement = self._load_vae(vae, own)
        for pipe in self._pipes.values():
            pipe.vae = replacement
        if self.memory_plan.cpu_offload:
            place(base, self.device.device, self.memory_plan)  # offload hooks name the VAE
        elif self.memory_plan.vae_tiling:
            replacement.enable_tiling()
        cpu_layout(base, self.device, vae=replacement)
        cuda_layout(base, self.device, vae=replacement)
        self._own_vae = None if vae is None else own
        self._vae = vae
        log.info("VAE: %s", vae or "the model's own")

    def _load_vae(self, vae: Path, own: Any) -> Any:
        """A VAE file for the loaded model: an SD VAE fitted to the model's own, or a flow
        family's VAE with that family's config."""
        from sdstudio.engine.vae import load_vae

        assert self._model is not None
        if not self._model.family.flow:
            return load_vae(vae, own)
        from sdstudio.engine.parts.vae_files import load_vae_file

        replacement = load_vae_file(vae, self._model.family.id, dtype=own.dtype)
        return replacement.to(own.device)

    def unload(self) -> None:
        """Free the loaded model's weights."""
        if self._model is None:
            return
        log.info("Unloading %s", self._model.path)
        for listener in self._unload_listeners:
            listener()
        self._pipes.clear()
        self._model = None
        self._hash = None
        self._own_vae = None
        self._vae = None
        self._scheduler_config = {}
        self.compiler.forget()
        gc.collect()
        _empty_device_cache(self.device.device)

    def _load(
        self, path: Path, split: SplitModel | None, on_status: Callable[[str], None] | None = None
    ) -> None:
        self.device = model_precision(self.device, path, split)
        log.info("Loading %s on %s", path, self.device.describe())
        plan = plan_before_loading(
            self.memory_mode,
            self.device,
            path,
            model_display_name(path),
            split=split,
            on_status=on_status,
        )
        _disable_library_progress_bars()
        try:
            if split is not None:
                pipe = assemble(split, dtype=self.device.dtype)
                single_file = True
            elif path.is_dir():
                pipe = self._load_folder(path)
                single_file = False
            else:
                pipe = self._load_single_file(path)
                single_file = True
            pipe = prepared(pipe)  # the family's adjustments (Flux.1 Fill's own pipeline)
            if plan is None:
                plan = plan_memory(
                    self.memory_mode,
                    self.device.device,
                    weights_bytes(pipe),
                    free_memory(self.device.device),
                )
            self.memory_plan = plan
            place(pipe, self.device.device, self.memory_plan)
            cpu_layout(pipe, self.device)
            cuda_layout(pipe, self.device)
            self.compiler.apply(pipe, self.device.compile)
        except ModelError:
            raise
        except MemoryError:
            raise ModelError(f"Not enough memory to load {path.name}.") from None
        except Exception as error:  # diffusers raises many types for a bad model
            log.exception("Loading %s failed", path)
            raise ModelError(f"Could not load the model {path.name}: {first_line(error)}") from None
        pipe.set_progress_bar_config(disable=True)
        unet = getattr(pipe, "unet", None)
        family = family_of_pipeline(type(pipe).__name__) or SD1
        inpainting = bool(unet is not None and unet.config.in_channels == 9)
        inpainting = inpainting or family.own_inpainting
        self._model = LoadedModel(
            path, model_display_name(path), single_file, inpainting, family, split
        )
        self._scheduler_config = dict(pipe.scheduler.config)
        self._pipes = {"inpaint" if inpainting else "txt2img": pipe}

    def _load_folder(self, path: Path) -> Any:
        from diffusers import DiffusionPipeline

        index = path / "model_index.json"
        if not index.is_file():
            raise ModelError(
                f"{path} is not a diffusers model folder (it has no model_index.json)."
            )
        options: dict[str, Any] = {"dtype": self.device.dtype, "local_files_only": True}
        if '"safety_checker"' in index.read_text("utf-8", errors="replace"):
            options.update(safety_checker=None, requires_safety_checker=False)
        variant = weights_variant(path)
        if variant:
            options["variant"] = variant
        return DiffusionPipeline.from_pretrained(path, **options)

    def _load_single_file(self, path: Path) -> Any:
        """Load a checkpoint offline: with ``single_file_config`` or its family's shipped configs.

        Pickles are read only through a restricted loader (see
        :mod:`sdstudio.engine.models.loading`).
        """
        from sdstudio.engine.models.loading import load_single_file

        return load_single_file(path, dtype=self.device.dtype, config=self.single_file_config)

    def _derive(self, task: str) -> Any:
        import diffusers
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        base = next(iter(self._pipes.values()))
        assert self._model is not None
        named = self._model.family.derived.get(task)
        if named is not None:  # kept in its precision (see pipeline_sharing)
            return share_pipeline(getattr(diffusers, named), base)
        factory = AutoPipelineForImage2Image if task == "img2img" else AutoPipelineForInpainting
        pipe = factory.from_pipe(base)  # AutoPipeline's from_pipe keeps the dtype
        pipe.set_progress_bar_config(disable=True)
        return pipe


_TASKS = {Mode.TXT2IMG: "txt2img", Mode.IMG2IMG: "img2img", Mode.INPAINT: "inpaint"}


def weights_variant(folder: Path) -> str | None:
    """``"fp16"`` when a diffusers folder holds only half-precision weight files.

    Downloads prefer the ``*.fp16.safetensors`` files a repository offers, and
    diffusers loads them only when asked for that variant.
    """
    weights = next((folder / n for n in ("unet", "transformer") if (folder / n).is_dir()), None)
    if weights is None:
        return None
    names = [p.name for p in weights.iterdir()]
    plain = [n for n in names if n.endswith(".safetensors") and ".fp16." not in n]
    if not plain and any(n.endswith(".fp16.safetensors") for n in names):
        return "fp16"
    return None


def model_display_name(path: Path) -> str:
    """The name users see: ``org/name`` for the Hugging Face cache, the file name
    without extension, or the folder name."""
    return display_name(path)


def _disable_library_progress_bars() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _empty_device_cache(device: str) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
