"""The generation worker: a QObject living on its own QThread that owns the engine.

Requests arrive through a queued signal and run in the worker thread; results
leave through signals carrying plain Python objects (PIL images, paths,
records), never Qt GUI objects. torch and diffusers are imported here, on the
worker thread, the first time a job runs, so the window appears first.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Any

from PIL import Image
from PySide6.QtCore import QObject, Signal, Slot

from sdstudio.engine.errors import GenerationCancelled, SdStudioError, StorageError
from sdstudio.engine.history.library import ImageLibrary
from sdstudio.engine.images import store_input
from sdstudio.engine.paths import AppPaths
from sdstudio.engine.request import GenerationRequest

log = logging.getLogger(__name__)


def freeze_imported_objects() -> None:
    """Keep the half million objects of torch, diffusers and Qt out of garbage collection.

    Python's full collection walks every tracked object while holding the
    global lock: with these libraries imported that took about 250 ms, and
    unloading a model needs one, so the GUI stalled at every model switch.
    Frozen (``gc.freeze``), they are skipped; a model's own objects are still
    collected (about 1 ms). Objects created later are not affected.
    """
    gc.collect(1)  # the young garbage; a full collection is the stall this avoids
    gc.freeze()
    log.info("Froze %d long-lived objects out of garbage collection", gc.get_freeze_count())


class GenerationWorker(QObject):
    """Runs one job at a time; ends every job with finished, cancelled or failed."""

    status = Signal(int, str)
    """(job id, message): loading a model, or a note about the inputs."""
    progress = Signal(int, int, int, int, int, object)
    """(job id, step, total, image index, batch size, preview PIL image or None)."""
    image_saved = Signal(int, object)
    """(job id, HistoryEntry of the image written and recorded)."""
    finished = Signal(int, list)
    """(job id, paths of the images written)."""
    cancelled = Signal(int)
    failed = Signal(int, str)
    warmed_up = Signal()
    """torch and diffusers are imported; the first job will not pause to load them."""
    memory_freed = Signal()
    """:meth:`free_memory` is done."""

    def __init__(self, library: ImageLibrary, paths: AppPaths, device: str = "auto") -> None:
        super().__init__()
        self._library = library
        self._paths = paths
        self._device = device
        self._engine: Any = None
        self._tokens: dict[int, Any] = {}

    def cancel(self, job_id: int) -> None:
        """Cancel a job; safe to call from any thread, before or while it runs."""
        from sdstudio.engine.generation import CancelToken

        self._tokens.setdefault(job_id, CancelToken()).cancel()

    @Slot(int, object, object, object)
    def run(
        self,
        job_id: int,
        request: GenerationRequest,
        inputs: tuple[tuple[Path, Image.Image], ...] = (),
        recorded_device: str | None = None,
    ) -> None:
        """Run a job (in the worker thread), first writing the input images it names;
        an exact re-run (``recorded_device``) in the precision its image was made in."""
        written: list[str] = []
        try:
            token = self._token(job_id)
            token.raise_if_cancelled()
            for path, image in inputs:
                if store_input(image, path.parent) != path:
                    raise StorageError(f"The input image {path.name} changed before it was saved.")
            engine = self._ensure_engine()
            engine.pipelines.use_device(self._job_device(recorded_device))
            from sdstudio.engine.settings import load_settings

            engine.tiny_vaes.mode = load_settings(self._paths).previews
            for result in engine.generate(
                request,
                on_progress=lambda p: self.progress.emit(
                    job_id, p.step, p.total, p.image_index, p.batch_size, p.preview
                ),
                on_status=lambda message: self.status.emit(job_id, message),
                cancel=token,
            ):
                entry = self._library.save(result)
                written.append(entry.path)
                self.image_saved.emit(job_id, entry)
        except GenerationCancelled:
            self.cancelled.emit(job_id)
        except SdStudioError as error:
            self.failed.emit(job_id, str(error))
        except Exception as error:
            log.exception("Job %s failed", job_id)
            self.failed.emit(job_id, f"Unexpected error: {type(error).__name__}: {error}")
        else:
            self.finished.emit(job_id, written)
        finally:
            self._tokens.pop(job_id, None)

    @Slot()
    def warm_up(self) -> None:
        """Import torch and the pipelines now, while the user is still typing.

        Loading torch's libraries holds Python's global lock for a moment, which
        the GUI thread feels; better once at start than at the first Generate.
        """
        try:
            self._ensure_engine()
            import diffusers

            diffusers.StableDiffusionPipeline  # noqa: B018 - resolves the lazy import
            diffusers.AutoPipelineForImage2Image  # noqa: B018
        except Exception:  # the first job will report any real problem
            log.exception("Warm-up failed")
        freeze_imported_objects()
        self.warmed_up.emit()

    @Slot()
    def free_memory(self) -> None:
        """Let go of every model the engine holds (the pipelines, refiner, ControlNets,
        upscaler) and empty the device's cache, so that another process, a training run,
        gets the memory; the next job loads its model again."""
        try:
            engine, self._engine = self._engine, None
            if engine is not None:
                engine.refiner.unload()
                engine.pipelines.unload()
                del engine
                gc.collect()
                empty_device_caches()
        except Exception:  # the memory is freed as far as it could be; the run may start
            log.exception("Freeing the models' memory failed")
        self.memory_freed.emit()

    @Slot()
    def shutdown(self) -> None:
        """Free the model and end the worker thread's event loop."""
        try:
            if self._engine is not None:
                self._engine.pipelines.unload()
                self._engine = None
        finally:
            self.thread().quit()

    def _job_device(self, recorded_device: str | None) -> Any:
        """The device config of a job: the app's, or a re-run's recorded precision."""
        from sdstudio.engine.devices import choose_device
        from sdstudio.engine.precision import rerun_device
        from sdstudio.engine.settings import load_settings

        compiled = load_settings(self._paths).compile_denoiser
        config = choose_device(self._device, compile=compiled)
        return config if recorded_device is None else rerun_device(config, recorded_device)

    def _token(self, job_id: int) -> Any:
        from sdstudio.engine.generation import CancelToken

        return self._tokens.setdefault(job_id, CancelToken())

    def _networks(self, manager: Any) -> Any:
        """LoRAs and embeddings from the model folders of the settings in effect at each job."""
        from sdstudio.engine.models.catalog import network_folders
        from sdstudio.engine.networks import Networks
        from sdstudio.engine.settings import load_settings

        paths = self._paths
        return Networks(
            lambda: network_folders(paths, load_settings(paths), "lora"),
            lambda: network_folders(paths, load_settings(paths), "embedding"),
            manager.hash_cache,
        )

    def _ensure_engine(self) -> Any:
        if self._engine is None:
            from sdstudio.logs import quiet_third_party

            quiet_third_party()
            from sdstudio.engine.control.annotators import annotator_folders
            from sdstudio.engine.devices import choose_device
            from sdstudio.engine.generation import Engine
            from sdstudio.engine.hashing import HashCache
            from sdstudio.engine.models.catalog import network_folders
            from sdstudio.engine.models.lookup import ModelFinder
            from sdstudio.engine.pipelines import PipelineManager
            from sdstudio.engine.prompting.wildcards import wildcard_folders
            from sdstudio.engine.refine.face_detection import open_detector
            from sdstudio.engine.settings import load_settings

            paths = self._paths
            manager = PipelineManager(
                choose_device(self._device),
                hash_cache=HashCache(paths.cache_dir / "model-hashes.json"),
                memory_mode=load_settings(paths).memory,
                find_model=ModelFinder.for_catalog(paths, lambda: load_settings(paths)),
                compile_cache=paths.cache_dir / "torch-compile",
            )
            self._engine = Engine(
                manager,
                paths.inputs_dir,
                networks=self._networks(manager),
                vae_dirs=lambda: network_folders(paths, load_settings(paths), "vae"),
                text_encoder_dirs=lambda: network_folders(
                    paths, load_settings(paths), "text_encoder"
                ),
                upscaler_dirs=lambda: network_folders(paths, load_settings(paths), "upscaler"),
                control_dirs=lambda: network_folders(paths, load_settings(paths), "controlnet"),
                ip_adapter_dirs=lambda: network_folders(paths, load_settings(paths), "ipadapter"),
                clip_vision_dirs=lambda: network_folders(
                    paths, load_settings(paths), "clip_vision"
                ),
                annotator_dirs=lambda: annotator_folders(paths, load_settings(paths)),
                detectors=lambda name: open_detector(
                    name, network_folders(paths, load_settings(paths), "detector")
                ),
                wildcard_dirs=lambda: wildcard_folders(paths, load_settings(paths)),
                tiny_vae_dirs=lambda: network_folders(paths, load_settings(paths), "tiny_vae"),
            )
        return self._engine


def empty_device_caches() -> None:
    """Return the memory torch keeps cached on CUDA or MPS to the system (nothing when
    torch was never imported: no model was loaded then)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()
