"""LoRAs and textual-inversion embeddings, found by name as AUTOMATIC1111 finds them.

- ``<lora:name:weight>`` tags name a LoRA file (``name.safetensors``, ``.pt``,
  ``.ckpt`` or ``.bin``, matched case-insensitively) in the LoRA folders the
  caller gives. Files are loaded with ``load_lora_weights`` (diffusers and
  kohya/A1111 layouts; for the flow families see :mod:`sdstudio.engine.flow_loras`),
  kept loaded per model, and exactly the requested set is switched on with
  ``set_adapters``; a request without tags disables them all, so its pixels are
  those of the bare model. ``cross_attention_kwargs`` are never used: diffusers
  would keep their ``_lora_scale``. A LoRA made for another family than the
  model's is refused before it is loaded. LyCORIS files (LoHa, LoKr, full) named
  by the same tags change the weights instead (:mod:`.prompting.lycoris_patch`).
- An embedding file whose name appears as a word in the prompt or negative
  prompt is loaded with ``load_textual_inversion`` under its name in lower
  case (CLIP lowercases prompts), and stays loaded for the model.
- ``<hypernet:name:strength>`` tags apply AUTOMATIC1111 hypernetworks to the UNet's
  attention (:mod:`.prompting.hypernetworks`); the text encoder's output stays.

LoRA and LyCORIS pickles (old kohya and LyCORIS ``.pt``/``.ckpt`` saves) are read only
through :mod:`sdstudio.engine.models.loading`'s restricted loader and used as the
safetensors files are; embedding pickles by diffusers with
``torch.load(weights_only=True)``. A refused one is reported as holding code.
Hashes are A1111's ``shorthash``: the first 12 hex digits of the file's SHA-256.
Nothing here imports Qt.
"""

from __future__ import annotations

import logging
import re
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.engine import flow_loras
from sdstudio.engine.errors import InvalidRequest, ModelError, first_line
from sdstudio.engine.hashing import HashCache
from sdstudio.engine.models.loading import load_pickle_state_dict, pickle_refusal, refused_pickle
from sdstudio.engine.network_files import (
    EMBEDDING_SUFFIXES,
    LORA_SUFFIXES,
    find_file,
    list_files,
    may_be_embedding,
    named_in,
)
from sdstudio.engine.prompting import lycoris
from sdstudio.engine.prompting.embedding_tokens import (
    expand_embedding_tokens as expand_embedding_tokens,
)
from sdstudio.engine.prompting.families import check_family as _check_family
from sdstudio.engine.prompting.hypernetworks import Hypernetworks, beside, hypernetwork_tags
from sdstudio.engine.prompting.lycoris_patch import LycorisPatcher
from sdstudio.engine.prompts import parse_prompt

log = logging.getLogger(__name__)

MAX_CACHED_LORAS = 8
"""LoRAs kept loaded per model; the least recently used beyond this are deleted."""
HASH_LENGTH = 12

FolderProvider = Callable[[], Iterable[Path]]


@dataclass(frozen=True, slots=True)
class NetworkUse:
    """A LoRA or embedding used for an image."""

    name: str
    path: Path
    hash: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ActiveNetworks:
    """What :meth:`Networks.apply` switched on for a request."""

    loras: tuple[NetworkUse, ...] = ()
    embeddings: tuple[NetworkUse, ...] = ()
    hypernets: tuple[NetworkUse, ...] = ()
    """Applied in the UNet (:mod:`.prompting.hypernetworks`): the text encoder's output stays."""

    @property
    def signature(self) -> tuple[tuple[str, float], ...]:
        """A key that changes whenever the text encoder's output may change."""
        return tuple((str(u.path), u.weight) for u in (*self.loras, *self.embeddings))

    def record_extra(self) -> dict[str, Any]:
        """The entries for :attr:`ImageRecord.extra`; empty when nothing was used."""
        extra: dict[str, Any] = {}
        if self.loras:
            extra["loras"] = [
                {"name": u.name, "weight": u.weight, "hash": u.hash} for u in self.loras
            ]
        if self.embeddings:
            extra["embeddings"] = [{"name": u.name, "hash": u.hash} for u in self.embeddings]
        if self.hypernets:
            extra["hypernets"] = [
                {"name": u.name, "weight": u.weight, "hash": u.hash} for u in self.hypernets
            ]
        return extra


class Networks:
    """Loads LoRAs and embeddings into the pipelines of one model at a time.

    Used from one thread (the engine's). :meth:`forget` must be called when the
    model is unloaded; a pipeline with another UNet also resets the state.
    """

    def __init__(
        self,
        lora_dirs: FolderProvider,
        embedding_dirs: FolderProvider,
        hash_cache: HashCache | None = None,
        hypernetwork_dirs: FolderProvider | None = None,
    ) -> None:
        """Without ``hypernetwork_dirs``, the ``hypernetworks`` folders beside the LoRA folders."""
        self._lora_dirs = lora_dirs
        self._embedding_dirs = embedding_dirs
        self._hashes = hash_cache or HashCache(None)
        self._denoiser: weakref.ref[Any] | None = None
        self._adapters: dict[Path, str] = {}
        """LoRA file → adapter name, least recently used first."""
        self._tokens: dict[str, Path] = {}
        self._failed: set[Path] = set()
        self._enabled = False
        self._lycoris = LycorisPatcher()
        beside_loras = lambda: beside(Path(f) for f in lora_dirs())  # noqa: E731
        self._hypernets = Hypernetworks(hypernetwork_dirs or beside_loras, self._hashes)

    def forget(self) -> None:
        """Drop what is known to be loaded (the model was unloaded)."""
        self._denoiser = None
        self._adapters.clear()
        self._tokens.clear()
        self._failed.clear()
        self._enabled = False
        self._lycoris.forget()
        self._hypernets.forget()

    def apply(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str,
        on_status: Callable[[str], None] | None = None,
    ) -> ActiveNetworks:
        """Switch on exactly the LoRAs the prompts name, and load the embeddings they name."""
        self._track(pipe)
        loras = self._apply_loras(pipe, _lora_tags(prompt), on_status)
        embeddings = self._apply_embeddings(pipe, (prompt, negative_prompt), on_status)
        hypernets = tuple(
            NetworkUse(*use) for use in self._hypernets.apply(pipe, prompt, on_status)
        )
        return ActiveNetworks(tuple(loras), tuple(embeddings), hypernets)

    def _track(self, pipe: Any) -> None:
        """Forget what was loaded when the pipeline's UNet or transformer is another."""
        denoiser = getattr(pipe, "unet", None)
        if denoiser is None:
            denoiser = getattr(pipe, "transformer", None)
        if self._denoiser is None or self._denoiser() is not denoiser:
            self.forget()
            self._denoiser = weakref.ref(denoiser) if denoiser is not None else None

    def _apply_loras(
        self,
        pipe: Any,
        tags: list[tuple[str, float]],
        on_status: Callable[[str], None] | None = None,
    ) -> list[NetworkUse]:
        folders = [Path(f) for f in self._lora_dirs()]
        chosen = []
        for name, weight in tags:
            path = find_file(name, folders, LORA_SUFFIXES)
            if path is None:
                where = ", ".join(str(f) for f in folders) or "no LoRA folders are set"
                raise InvalidRequest(f"LoRA '{name}' not found in {where}.")
            _check_family(pipe, path)
            chosen.append(NetworkUse(name, path, self._short_hash(path), weight))
        uses = self._lycoris.apply(pipe, chosen, on_status)  # LoHa, LoKr…: patched weights
        if not uses and self._enabled:
            pipe.disable_lora()
            self._enabled = False
        if not uses:
            return chosen
        if not hasattr(pipe, "set_adapters"):
            raise InvalidRequest("This model's pipeline cannot use LoRAs.")
        keep = {use.path for use in uses}
        names = [self._load_lora(pipe, use.path, keep, on_status) for use in uses]
        pipe.enable_lora()
        pipe.set_adapters(names, [use.weight for use in uses])
        self._enabled = True
        return chosen

    def _load_lora(
        self,
        pipe: Any,
        path: Path,
        keep: set[Path],
        on_status: Callable[[str], None] | None = None,
    ) -> str:
        if path in self._adapters:
            self._adapters[path] = self._adapters.pop(path)  # most recently used
            return self._adapters[path]
        self._evict(pipe, keep)
        name = _adapter_name(path, set(self._adapters.values()))
        log.info("Loading LoRA %s", path)
        flow = flow_loras.flow_family(pipe) is not None
        notices: list[str] = []
        try:
            with warnings.catch_warnings():
                # Expected: several LoRAs are several adapters on one model.
                warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
                if flow:
                    notices = flow_loras.load_lora(pipe, path, name)
                else:
                    pipe.load_lora_weights(lycoris.lora_source(pipe, path), adapter_name=name)
        except ModelError:
            _delete_adapter(pipe, name)
            raise
        except Exception as error:  # diffusers/peft raise many types for a bad file
            log.exception("Loading LoRA %s failed", path)
            _delete_adapter(pipe, name)
            if refused_pickle(error):
                raise pickle_refusal(path) from None
            problem = _lora_problem(error)
            layout = flow_loras.file_layout(path) if flow else ""
            where = f" ({layout} layout)" if layout else ""
            raise ModelError(f"Could not load the LoRA {path.name}{where}: {problem}") from None
        for notice in notices:
            log.warning("%s", notice)
            if on_status:
                on_status(notice)
        self._adapters[path] = name
        return name

    def _evict(self, pipe: Any, keep: set[Path]) -> None:
        for path in list(self._adapters):
            if len(self._adapters) < MAX_CACHED_LORAS:
                return
            if path not in keep:
                _delete_adapter(pipe, self._adapters.pop(path))

    def _apply_embeddings(
        self, pipe: Any, texts: tuple[str, ...], on_status: Callable[[str], None] | None
    ) -> list[NetworkUse]:
        """Load exactly the embeddings the prompts name (loaded tokens would split other words)."""
        if getattr(pipe, "tokenizer", None) is None:
            return []
        plain = [parse_prompt(text).text for text in texts]
        wanted = {
            stem: path
            for stem, path in list_files(self._embedding_dirs(), EMBEDDING_SUFFIXES).items()
            if path not in self._failed and named_in(stem, plain) and may_be_embedding(path)
        }
        if wanted != self._tokens:
            if self._tokens:
                for tokenizer, encoder in _text_encoders(pipe):
                    pipe.unload_textual_inversion(tokenizer=tokenizer, text_encoder=encoder)
                self._tokens = {}
            for token, path in wanted.items():
                if self._load_embedding(pipe, path, token, on_status):
                    self._tokens[token] = path
        return [NetworkUse(p.stem, p, self._short_hash(p)) for p in self._tokens.values()]

    def _load_embedding(
        self, pipe: Any, path: Path, token: str, on_status: Callable[[str], None] | None
    ) -> bool:
        """Load one embedding file; SDXL files hold a vector set per text encoder."""
        encoders = _text_encoders(pipe)
        loaded: list[tuple[Any, Any]] = []
        try:
            log.info("Loading embedding %s", path)
            if len(encoders) == 1:
                pipe.load_textual_inversion(str(path), token=token)
                return True
            vectors = _sdxl_vectors(path)
            for (tokenizer, encoder), vector in zip(encoders, vectors, strict=True):
                pipe.load_textual_inversion(
                    vector, token=token, tokenizer=tokenizer, text_encoder=encoder
                )
                loaded.append((tokenizer, encoder))
        except Exception as error:  # a file of another model family, or not an embedding
            log.warning("Embedding %s not loaded: %s", path, error)
            for tokenizer, encoder in loaded:  # an SDXL file loaded into one encoder only
                pipe.unload_textual_inversion(token, tokenizer=tokenizer, text_encoder=encoder)
            self._failed.add(path)
            if on_status:
                reason = pickle_refusal(path) if refused_pickle(error) else error
                on_status(f"The embedding {path.name} was not used: {first_line(reason)}")
            return False
        return True

    def _short_hash(self, path: Path) -> str:
        return self._hashes.sha256(path)[:HASH_LENGTH]


def _lora_problem(error: BaseException) -> str:
    """Why a LoRA file did not load, in words."""
    if isinstance(error, KeyError):
        return (
            f"it lacks the tensor {error.args[0]!r}: the file is incomplete, or a kind of LoRA "
            "this version cannot read"
        )
    text = first_line(error)
    if "size mismatch" in text.lower():
        return f"it does not fit this model ({text}); it may be made for another model family"
    return text


def _text_encoders(pipe: Any) -> list[tuple[Any, Any]]:
    """The (tokenizer, text encoder) pairs of a pipeline: one, or two for SDXL."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "tokenizer_2", None) is not None and getattr(pipe, "text_encoder_2", None):
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _sdxl_vectors(path: Path) -> tuple[Any, Any]:
    """The ``clip_l`` and ``clip_g`` vectors of an SDXL embedding file."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = load_pickle_state_dict(path)
    if not isinstance(state, dict) or "clip_l" not in state or "clip_g" not in state:
        raise ModelError("it is not an SDXL embedding (it has no clip_l and clip_g vectors)")
    return state["clip_l"], state["clip_g"]


def strip_notice(prompt: str, negative_prompt: str) -> str | None:
    """The notice for LoRA tags that are removed without loading anything, or ``None``."""
    hypernets = hypernetwork_tags(prompt) + hypernetwork_tags(negative_prompt)
    tags = _lora_tags(prompt) + _lora_tags(negative_prompt) + hypernets
    if not tags:
        return None
    names = ", ".join(name for name, _ in tags)
    kinds = "LoRA and hypernetwork files" if hypernets else "LoRA files"
    return f"{kinds} are not searched here; ignored: {names}."


def _lora_tags(prompt: str) -> list[tuple[str, float]]:
    """The prompt's LoRA tags, the weights of a name given twice added up.

    As in A1111, tags in the negative prompt are removed but not applied.
    """
    weights: dict[str, float] = {}
    names: dict[str, str] = {}
    for name, weight in parse_prompt(prompt).loras:
        key = name.lower()
        names.setdefault(key, name)
        weights[key] = weights.get(key, 0.0) + weight
    return [(names[key], weight) for key, weight in weights.items()]


def _adapter_name(path: Path, taken: set[str]) -> str:
    base = "lora_" + re.sub(r"\W", "_", path.stem)
    name, index = base, 1
    while name in taken:
        index += 1
        name = f"{base}_{index}"
    return name


def _delete_adapter(pipe: Any, name: str) -> None:
    try:
        pipe.delete_adapters(name)
    except Exception:  # not loaded, or loaded only partly
        log.debug("Could not delete adapter %s", name, exc_info=True)
