"""Running a request's control units on the model's pipeline.

:class:`ControlStage` refuses, before any model loads, units that cannot guide the
request (a ControlNet of another family than the model, a family without ControlNets,
passes that would run without them: the detailer, the refiner, SD upscale), then loads the request's
ControlNets beside the model and hands out the pass that runs them, in the first pass and
the hires pass (:attr:`ControlStage.active`, see :mod:`~sdstudio.engine.control.control_pass`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.engine.control.control_files import (
    SUPPORTED_FAMILIES,
    ControlNetFile,
    find_controlnet,
    inspect_controlnet,
)
from sdstudio.engine.control.controlnets import ControlNetCache, control_pipeline
from sdstudio.engine.control.flow_control_files import FLOW_LABELS
from sdstudio.engine.control.kinds import check_kinds, union_modes
from sdstudio.engine.control.t2i_adapters import check_fits as check_adapter_fits
from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.request import GenerationRequest, InpaintArea, Mode

if TYPE_CHECKING:
    from sdstudio.engine.control.annotators import Annotators
    from sdstudio.engine.control.control_pass import ControlPass
    from sdstudio.engine.inputs import Inputs
    from sdstudio.engine.pipelines import PipelineManager

_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def check_control(request: GenerationRequest) -> None:
    """Refuse control units with passes they cannot guide correctly (cheap, no files)."""
    if not request.control:
        return
    passes = (
        ("detailer", "the detailer"),
        ("refiner", "the refiner"),
        ("upscale", "SD upscale"),
    )
    for name, what in passes:
        if getattr(request, name) is not None:
            raise InvalidRequest(
                f"ControlNet units cannot guide {what} yet; turn {what} off or remove the "
                "control units."
            )
    if request.mode is Mode.INPAINT and request.inpaint_area is InpaintArea.MASKED:
        raise InvalidRequest(
            'ControlNet units cannot guide inpainting of "only masked" yet; inpaint the '
            "whole picture or remove the control units."
        )
    check_preprocessors(request)


def annotator_device(pipelines: PipelineManager) -> str:
    """Where annotator networks run: the model's GPU when the model is all there (no
    offloading to make room), else the CPU."""
    device = str(pipelines.device.device)
    return "cpu" if pipelines.memory_plan.cpu_offload else device


def check_preprocessors(request: GenerationRequest, annotators: Annotators | None = None) -> None:
    """Refuse unknown preprocessors (or settings out of their range), and with
    ``annotators`` those whose weights are missing."""
    from sdstudio.engine.control.preprocessors import check_preprocessor

    for unit in request.control:
        check_preprocessor(unit, annotators)


class ControlStage:
    """The ControlNets of the request running, loaded beside the model."""

    def __init__(self, pipelines: PipelineManager) -> None:
        self._pipelines = pipelines
        self.folders: Callable[[], Iterable[Path]] | None = None
        """The folders where a ControlNet named by file name is looked for."""
        self.single_file_config: Path | None = None
        """A folder with a ControlNet ``config.json`` for single files (without it: made
        from the family's shipped UNet config)."""
        self.cache = ControlNetCache()
        self.annotators: Annotators | None = None
        """The annotator folders of the preprocessors that need weights (Depth Anything)."""
        self.active: ControlPass | None = None
        """The control pass of the request running (``None``: no control units)."""
        pipelines.add_unload_listener(self.unload)

    def unload(self) -> None:
        """Free the ControlNets (with the model they guided) and the annotator network."""
        self.active = None
        self.cache.keep_only([])
        if self.annotators is not None:
            self.annotators.forget()

    def check(self, request: GenerationRequest) -> list[ControlNetFile]:
        """Refuse, before anything loads, units that cannot guide ``request``; the
        ControlNet files of its units."""
        check_control(request)
        if not request.control:
            return []
        family = self._model_family(request)
        if family is not None and family not in (*SUPPORTED_FAMILIES, *FLOW_LABELS):
            label = _model_label(family)
            raise InvalidRequest(
                "ControlNet units guide SD 1.x, SD 2.x, SDXL, Flux.1, SD 3.x, Qwen-Image and "
                f"Z-Image models; {label} models cannot use them yet. Remove the control "
                "units or choose such a model."
            )
        check_preprocessors(request, self.annotators)  # weights found before models load
        folders = list(self.folders()) if self.folders is not None else []
        files = []
        for number, unit in enumerate(request.control, 1):
            file = inspect_controlnet(find_controlnet(unit.model, folders))
            if family is not None and file.family not in (family, "unknown"):
                label = {**_LABELS, **FLOW_LABELS}[family]
                raise InvalidRequest(
                    f"Control unit {number}: the ControlNet {file.name} is for "
                    f"{file.label} models, and the model is {label}. Choose a {label} "
                    "ControlNet."
                )
            files.append(file)
        if family in FLOW_LABELS or any(file.family in FLOW_LABELS for file in files):
            from sdstudio.engine.control.flow_controlnets import check_flow_units

            check_flow_units(request, files, family)
        else:
            check_kinds(request, files)
        return files

    def prepare(
        self,
        inputs: Inputs,
        pipe: Any,
        on_status: Callable[[str], None] | None = None,
    ) -> ControlPass | None:
        """Load the request's ControlNets and make their pass :attr:`active` (none: free
        the ControlNets loaded before)."""
        from sdstudio.engine.control.control_pass import ControlPass

        self.active = None
        request = inputs.request
        if not request.control:
            self.cache.keep_only([])
            return None
        files = self.check(request)
        model = self._pipelines.model
        assert model is not None
        if model.family.flow:
            return self._prepare_flow(inputs, pipe, files, on_status)
        if getattr(pipe, "unet", None) is None:
            raise InvalidRequest(
                f"ControlNet units guide SD 1.x, SD 2.x and SDXL models; {model.family.label} "
                "models cannot use them yet."
            )
        unet = pipe.unet
        models = []
        device = self._pipelines.device  # its compute dtype (weights may be stored in fp8)
        where: dict[str, Any] = {"dtype": device.dtype, "device": device.device}
        xl = unet.config.get("addition_embed_type") == "text_time"
        if any(file.kind == "union" for file in files) and not xl:
            raise InvalidRequest(
                "Union ControlNets run with SDXL models only; choose an SDXL model or a "
                "ControlNet made for this model's family."
            )
        for file in files:
            if on_status and not self.cache.holds(file, **where):
                what = {"t2i_adapter": "T2I-Adapter", "union": "Union ControlNet"}
                on_status(f"Loading the {what.get(file.kind, 'ControlNet')} {file.name}…")
            controlnet = self.cache.load(file, config=self.single_file_config, **where)
            if file.kind == "t2i_adapter":
                check_adapter_fits(controlnet, unet, int(pipe.vae_scale_factor), file.name)
            else:
                _check_fits(controlnet, unet, file)
            models.append(controlnet)
        self.cache.keep_only(models)
        modes = union_modes(request, files, models)
        task = "inpaint" if model.inpainting or request.mode is Mode.INPAINT else request.mode.value
        control_pipe = control_pipeline(pipe, task, models)
        hashes = [self._short_hash(file) for file in files]
        self.active = ControlPass(control_pipe, task, models, files, hashes, union_modes=modes)
        self.active.annotators = self.annotators
        if self.annotators is not None:  # on the GPU beside a model that fits there
            self.annotators.device = annotator_device(self._pipelines)
        return self.active

    def _prepare_flow(
        self,
        inputs: Inputs,
        pipe: Any,
        files: list[ControlNetFile],
        on_status: Callable[[str], None] | None,
    ) -> ControlPass:
        """Load a transformer family's ControlNets and make their pass active (see
        :mod:`~sdstudio.engine.control.flow_controlnets`)."""
        from sdstudio.engine.control.control_pass import ControlPass
        from sdstudio.engine.control.flow_controlnets import (
            check_flow_fits,
            flow_control_pipeline,
            flow_union_modes,
        )

        request = inputs.request
        model = self._pipelines.model
        assert model is not None
        family = model.family
        if family.id not in FLOW_LABELS or family.own_inpainting:
            raise InvalidRequest(
                f"ControlNet units cannot guide {family.label} models; choose another model "
                "of the family or remove the control units."
            )
        device = self._pipelines.device
        where: dict[str, Any] = {"dtype": device.dtype, "device": device.device}
        transformer = pipe.transformer
        models = []
        for file in files:
            if on_status and not self.cache.holds(file, **where):
                on_status(f"Loading the {file.label} ControlNet {file.name}…")
            controlnet = self.cache.load(file, base=transformer.config, **where)
            check_flow_fits(controlnet, transformer, family.id, file.name)
            models.append(controlnet)
        self.cache.keep_only(models)
        modes = flow_union_modes(request, files, models)
        task = "inpaint" if request.mode is Mode.INPAINT else request.mode.value
        control_pipe = flow_control_pipeline(pipe, family.id, task, models)
        hashes = [self._short_hash(file) for file in files]
        self.active = ControlPass(
            control_pipe, task, models, files, hashes, union_modes=modes, flow=family.id
        )
        self.active.annotators = self.annotators
        if self.annotators is not None:
            self.annotators.device = annotator_device(self._pipelines)
        return self.active

    def _model_family(self, request: GenerationRequest) -> str | None:
        """The model's family from its header or config (``None`` where they cannot tell)."""
        from sdstudio.engine.models.families import Family, detect_family

        try:
            found = detect_family(self._pipelines.find_model(request.model)).family
        except (ModelError, InvalidRequest, OSError, ValueError):
            return None
        if found is Family.UNKNOWN:
            return None
        return "sdxl" if found is Family.SDXL_REFINER else str(found)

    def _short_hash(self, file: ControlNetFile) -> str:
        """The first 8 hex digits of the file's SHA-256 (A1111's ControlNet extension
        shows them as ``[d14c016b]``); empty for a folder."""
        if file.folder:
            return ""
        return self._pipelines.hash_cache.sha256(file.path)[:8]


def _check_fits(controlnet: Any, unet: Any, file: ControlNetFile) -> None:
    """Refuse a loaded ControlNet that cannot guide the loaded UNet."""
    config, own = controlnet.config, unet.config
    xl = own.get("addition_embed_type") == "text_time"
    if (
        config.get("cross_attention_dim") != own.get("cross_attention_dim")
        or (config.get("addition_embed_type") == "text_time") != xl
        or list(config.get("block_out_channels", ())) != list(own.get("block_out_channels", ()))
    ):
        raise InvalidRequest(
            f"The ControlNet {file.name} does not fit the model (another family or size); "
            "choose a ControlNet made for this model's family."
        )


def _model_label(family: str) -> str:
    from sdstudio.engine.families import family as family_of

    try:
        return str(family_of(family).label)
    except (KeyError, ValueError):
        return family
