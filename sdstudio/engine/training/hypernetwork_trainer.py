"""AUTOMATIC1111 hypernetwork training for SD 1.x and SD 2.x: what :func:`train_hypernetwork`
runs.

A new hypernetwork gets, for each context width it is made for, a pair of small networks
(for the attention's keys and values) built exactly as generation rebuilds them from a
file (:func:`build_network`), initialized as A1111's ``HypernetworkModule`` initializes
them, and put on the UNet through the hooks generation uses (:func:`add_hooks`). Only
those networks learn; the UNet, VAE and text encoder stay frozen. While training the
networks run at strength 1 with their dropouts on, as in A1111.

The finished file is the dictionary A1111's ``Hypernetwork.save`` pickles: integer widths
to ``(keys, values)`` state dicts (``linear.N.weight`` …) and the creation settings. It
holds only tensors, numbers, strings, lists, tuples and dicts, so generation's restricted
loader reads it.

SDXL has no hypernetworks (A1111 applies them to SD 1.x and SD 2.x only): it is refused,
as are the flow models, which training does not load at all.
"""

from __future__ import annotations

import io
import random
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from sdstudio.engine.errors import InvalidRequest, ModelError
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.hashing import HashCache
from sdstudio.engine.prompting.hypernetwork_files import (
    Settings,
    build_network,
    lay_out_network,
)
from sdstudio.engine.prompting.hypernetworks import HASH_LENGTH, add_hooks, attention_widths
from sdstudio.engine.training.data import step_generator
from sdstudio.engine.training.dataset_trainer import DatasetTrainer
from sdstudio.engine.training.embedding_options import caption_from
from sdstudio.engine.training.embedding_trainer import snr_weights
from sdstudio.engine.training.events import CancelFlag, EventSink, Notice
from sdstudio.engine.training.hypernetwork_options import HypernetworkOptions
from sdstudio.engine.training.loop import autocast_for, run_training
from sdstudio.engine.training.model import TrainingModel

SAMPLE_GUIDANCE = 7.0
NORMAL_STD = 0.01
"""A1111's ``Normal`` initialization: weights N(0, 0.01), biases 0."""
HALVES = ("k", "v")


class HypernetworkTrainer(DatasetTrainer):
    """Loads the model and the data, hooks the new networks on, and gives the loop what it
    asks."""

    kind = "hypernetwork"

    def __init__(
        self,
        hypernetwork: HypernetworkOptions,
        *,
        on_event: EventSink,
        model: TrainingModel | None = None,
    ) -> None:
        """``model``: one already loaded (frozen, as :func:`load_training_model` gives it);
        without it the options' model is loaded. Its UNet gets the networks' hooks."""
        hypernetwork.check()
        base = hypernetwork.base
        self.hyper = hypernetwork
        self.options = base
        self.on_event = on_event
        self.templates = hypernetwork.templates()
        self._load(base, on_event, model)
        if self.model.is_sdxl:
            raise ModelError(
                f"{self.model.model_name} is an SDXL model; hypernetworks are made for SD 1.x "
                "and SD 2.x models (as in A1111): choose such a model."
            )
        self._check_prediction("hypernetwork")
        unet = self.model.pipe.unet
        self.sizes = self._sizes(attention_widths(unet))
        self.settings = Settings(
            structure=hypernetwork.layer_structure,
            activation=hypernetwork.activation,
            layer_norm=hypernetwork.layer_norm,
            activate_output=False,  # what A1111's "Create hypernetwork" makes
            dropout=hypernetwork.dropout or (0.0,) * len(hypernetwork.layer_structure),
        )
        self.layers = self._new_layers()
        self._handles = add_hooks(unet, [(self.layers, 1.0)])
        self._checkpoint_hash: str | None = None
        if base.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if base.cache_latents:
            on_event(
                Notice(message=f"Caching the latents of {len(self.data.dataset.images)} images…")
            )
            self.data.cache_latents(self.model)

    def _sizes(self, widths: set[int]) -> tuple[int, ...]:
        """The widths to make networks for: those asked, each of which the model must have."""
        if not self.hyper.sizes:
            return tuple(sorted(widths))
        missing = [size for size in self.hyper.sizes if size not in widths]
        if missing:
            raise InvalidRequest(
                f"{self.model.model_name} has no attention of width "
                f"{', '.join(str(m) for m in missing)}, so networks for it would never train; "
                f"its widths are {', '.join(str(w) for w in sorted(widths))}."
            )
        return tuple(sorted(set(self.hyper.sizes)))

    def _new_layers(self) -> dict[int, tuple[Any, Any]]:
        """A (keys, values) pair of freshly initialized networks per width, from the run's
        seed."""
        name = Path(f"{self.options.name}.pt")
        layers = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)
            for width in self.sizes:
                pair = []
                for _half in HALVES:
                    state = self._initial_state(lay_out_network(width, self.settings, name))
                    network = build_network(width, self.settings, state, name)
                    network.to(self.device).train().requires_grad_(True)
                    pair.append(network)
                layers[width] = (pair[0], pair[1])
        return layers

    def _initial_state(self, network: torch.nn.Sequential) -> dict[str, torch.Tensor]:
        """A1111's ``weight_initialization`` of a network's linear layers and layer norms."""
        init = self.hyper.weight_init
        leaky = self.hyper.activation == "leakyrelu"
        nonlinearity: Literal["leaky_relu", "relu"] = "leaky_relu" if leaky else "relu"
        for layer in network:
            if not isinstance(layer, torch.nn.Linear | torch.nn.LayerNorm):
                continue
            weight, bias = layer.weight.data, layer.bias.data
            if init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                # A1111 draws layer norms' weights from N(0, 0.01) too, whatever the choice.
                torch.nn.init.normal_(weight, mean=0.0, std=NORMAL_STD)
            elif init == "XavierUniform":
                torch.nn.init.xavier_uniform_(weight)
            elif init == "XavierNormal":
                torch.nn.init.xavier_normal_(weight)
            elif init == "KaimingUniform":
                torch.nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity)
            else:
                torch.nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)
            torch.nn.init.zeros_(bias)
        return {f"linear.{key}": value for key, value in network.state_dict().items()}

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Every trained parameter, as ``WIDTH.k.N.weight`` (k: keys, v: values)."""
        return {
            f"{width}.{half}.{name}": parameter
            for width, pair in self.layers.items()
            for half, network in zip(HALVES, pair, strict=True)
            for name, parameter in network.named_parameters()
        }

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Every network's parameters, at ``--learning-rate``."""
        params = list(self.named_parameters().values())
        return [{"params": params, "lr": self.options.learning_rate}]

    def captions_at(self, step: int) -> list[str]:
        """The step's prompts: a template per image with ``[name]`` and the caption."""
        batch = self.data.batch_at(step)
        filewords = self.data.captions_at(step, batch)
        rng = random.Random(f"{self.options.seed}:template:{step}")
        return [
            caption_from(rng.choice(self.templates), self.options.name, words)
            for words in filewords
        ]

    def loss(self, step: int) -> torch.Tensor:
        """The denoising loss of the step's batch, the networks hooked on at strength 1."""
        model, base = self.model, self.options
        noised = self.noised(step)
        batch, latents, fitted = noised.batch, noised.latents, noised.fitted
        noise, timesteps, noisy = noised.noise, noised.timesteps, noised.noisy
        prompts = self.captions_at(step)
        scheduler = model.noise_scheduler
        with torch.no_grad():
            hidden, _added = model.condition(prompts, fitted, batch.bucket)
        with self._dropout_rng(step):
            prediction = model.pipe.unet(noisy, timesteps, hidden.to(model.weight_dtype)).sample
        target = scheduler.get_velocity(latents, noise, timesteps) if model.v_prediction else noise
        loss = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
        loss = loss.mean(dim=[1, 2, 3])
        if base.min_snr_gamma is not None:
            loss = loss * snr_weights(model, base.min_snr_gamma, timesteps)
        return loss.mean()

    def _dropout_rng(self, step: int) -> AbstractContextManager[Any]:
        """The global generators seeded from the run's seed and ``step`` while the networks'
        dropouts draw, and given back after: a resumed run drops what the straight run
        dropped."""
        seed = step_generator(self.options.seed, step, stream=3).initial_seed()
        devices = [self.device] if self.device.type in ("cuda", "mps") else []
        forked = torch.random.fork_rng(devices=devices, device_type=self.device.type)

        @contextmanager
        def seeded() -> Iterator[None]:
            with forked:
                torch.manual_seed(seed)
                yield

        return seeded()

    def record(self) -> dict[str, Any]:
        """The options as plain values, kept with a state."""
        return self.hyper.record()

    def weights(self) -> dict[str, torch.Tensor]:
        """The networks' weights in float32, by :meth:`named_parameters`' names."""
        return {name: p.detach().clone() for name, p in self.named_parameters().items()}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Put saved weights back."""
        own = self.named_parameters()
        if set(weights) != set(own) or any(weights[k].shape != p.shape for k, p in own.items()):
            raise ModelError(
                "The saved state holds other networks than this run trains (another layer "
                "structure, layer norm or model)."
            )
        with torch.no_grad():
            for name, parameter in own.items():
                parameter.copy_(weights[name])

    def file_data(self, step: int) -> dict[Any, Any]:
        """The dictionary A1111's ``Hypernetwork.save`` writes."""
        hyper = self.hyper
        data: dict[Any, Any] = {
            width: tuple(_plain_state(network) for network in pair)
            for width, pair in self.layers.items()
        }
        dropout = list(hyper.dropout) if hyper.dropout is not None else None
        data.update(
            step=step,
            name=self.options.name,
            layer_structure=list(hyper.layer_structure),
            activation_func=hyper.activation,
            is_layer_norm=hyper.layer_norm,
            weight_initialization=hyper.weight_init,
            sd_checkpoint=self._model_hash(),
            sd_checkpoint_name=self.model.model_name,
            activate_output=False,
            use_dropout=dropout is not None,
            dropout_structure=dropout,
            last_layer_dropout=bool(dropout and dropout[-2] != 0),
            optional_info=None,
        )
        return data

    def _model_hash(self) -> str | None:
        """A1111's ``sd_checkpoint``: the model file's short hash (none for a folder)."""
        if self._checkpoint_hash is None and self.options.model.is_file():
            self._checkpoint_hash = HashCache(None).sha256(self.options.model)[:HASH_LENGTH]
        return self._checkpoint_hash

    def file_bytes(self, step: int) -> bytes:
        """The ``.pt`` file's bytes."""
        buffer = io.BytesIO()
        torch.save(self.file_data(step), buffer)
        return buffer.getvalue()

    def snapshot(self, step: int) -> dict[str, bytes]:
        """The hypernetwork file as it stands, kept in the state folder (usable as it is)."""
        return {f"{self.options.name}.pt": self.file_bytes(step)}

    def sample(self, step: int, path: Path) -> None:
        """An image of ``--sample-prompt`` with the networks as they are (dropouts off),
        from a fixed seed."""
        width, height = self.options.buckets.resolution
        generator = torch.Generator("cpu").manual_seed(self.options.seed)
        self._set_training(False)
        try:
            with torch.no_grad(), autocast_for(self.device, self.options.mixed_precision):
                image = self.model.pipe(
                    prompt=self.options.sample_prompt,
                    num_inference_steps=self.options.sample_steps,
                    guidance_scale=SAMPLE_GUIDANCE,
                    width=width,
                    height=height,
                    generator=generator,
                ).images[0]
        finally:
            self._set_training(True)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomically(path, buffer.getvalue())

    def _set_training(self, on: bool) -> None:
        for pair in self.layers.values():
            for network in pair:
                network.train(on)

    def remove_hooks(self) -> None:
        """Take the networks off the UNet: it computes as the plain model again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def finish(self, steps: int) -> Path:
        """Write ``NAME.pt`` into the hypernetworks folder and unhook the networks."""
        path = self.options.output_dir / f"{self.options.name}.pt"
        try:
            write_atomically(path, self.file_bytes(steps), overwrite=self.hyper.overwrite)
        except FileExistsError:
            raise InvalidRequest(
                f"A hypernetwork {path} appeared while training; the result is kept in the "
                f"state folder {self.options.state_dir}. Use --overwrite to replace it."
            ) from None
        self.remove_hooks()
        return path


def _plain_state(network: torch.nn.Sequential) -> OrderedDict[str, torch.Tensor]:
    """A network's weights named as A1111's ``HypernetworkModule`` names them
    (``linear.N.weight``), float32, on the CPU."""
    return OrderedDict(
        (f"linear.{name}", value.detach().to("cpu", torch.float32).clone())
        for name, value in network.state_dict().items()
    )


def train_hypernetwork(
    options: HypernetworkOptions,
    *,
    on_event: EventSink,
    cancel: CancelFlag | None = None,
    resume: Path | None = None,
) -> Path | None:
    """Train a hypernetwork; returns the written ``.pt``, or ``None`` when cancelled (its
    state saved)."""
    trainer = HypernetworkTrainer(options, on_event=on_event)
    return run_training(trainer, on_event=on_event, cancel=cancel, resume=resume)
