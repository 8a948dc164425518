"""AUTOMATIC1111 hypernetworks: ``<hypernet:name:strength>`` tags applied to a UNet.

A tag names a ``.pt`` file (see :mod:`.hypernetwork_files`) in the hypernetwork
folders (A1111's and ComfyUI's ``models/hypernetworks``, sdstudio's own), matched
case-insensitively as LoRAs are. The prompt's tags are removed before encoding (see
:func:`sdstudio.engine.prompts.extract_extra_networks`); tags in the negative prompt
are removed and not applied, as A1111 does.

A1111 (``apply_hypernetworks`` in its attention forwards) changes what every
attention of the UNet reads its keys and values from: ``context_k = net_k(context)``
and ``context_v = net_v(context)``, with the networks whose width is the context's.
For cross-attention the context is the text embedding (768 or 1024 wide); for
self-attention it is the image features (320, 640 or 1280 wide), and a file with
networks of those widths changes them too. Several tags apply in their order, each
to the output of the one before; a name given twice is applied twice with the
strength of its last tag (A1111 loads the file once and sets its strength per tag).

Here the same is done with forward pre-hooks on each attention's ``to_k`` and
``to_v`` in the loaded UNet: they change only the input of those projections,
so the weights, LoRAs included, stay as they are. The hooks are put on again for
every prompt and all of them come off for a prompt without tags, which then gives
the pixels of the bare model. SDXL has no hypernetworks (A1111 trains and applies
them to SD 1.x and SD 2.x models only), nor do the flow models: both are refused.

Hashes are A1111's ``Hypernetwork.shorthash``: the first 10 hex digits of the file's
SHA-256. Nothing here imports Qt, and torch only when a file is used.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sdstudio.engine import flow_loras
from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.hashing import HashCache
from sdstudio.engine.network_files import find_file
from sdstudio.engine.prompting.hypernetwork_files import (
    CONTEXT_FAMILIES,
    HypernetworkFile,
    read_hypernetwork,
    run_network,
)
from sdstudio.engine.prompts import parse_prompt

log = logging.getLogger(__name__)

HYPERNETWORK_SUFFIXES = (".pt",)
"""A1111 lists ``**/*.pt`` in its hypernetworks folder."""
HASH_LENGTH = 10
MAX_CACHED = 4
"""Hypernetworks kept built; the least recently used beyond this are dropped."""
FOLDER_NAME = "hypernetworks"

FolderProvider = Callable[[], Iterable[Path]]


def hypernetwork_tags(prompt: str) -> list[tuple[str, float]]:
    """The (name, strength) of each ``<hypernet:...>`` tag of ``prompt``, in order; a tag
    without a strength has 1, as in A1111."""
    return parse_prompt(prompt).hypernets


def beside(folders: Iterable[Path]) -> list[Path]:
    """The ``hypernetworks`` folders next to or inside ``folders`` (LoRA folders): A1111's
    ``models/Lora`` and ComfyUI's ``models/loras`` have ``models/hypernetworks`` beside
    them, a plain or app models folder holds a ``hypernetworks`` folder."""
    found: list[Path] = []
    for folder in folders:
        for candidate in (folder.parent / FOLDER_NAME, folder / FOLDER_NAME):
            if candidate.is_dir() and candidate not in found:
                found.append(candidate)
    return found


class Hypernetworks:
    """Finds, builds and applies the hypernetworks a prompt names (one thread at a time).

    :meth:`forget` must be called when the model is unloaded.
    """

    def __init__(self, folders: FolderProvider, hash_cache: HashCache | None = None) -> None:
        self._folders = folders
        self._hashes = hash_cache or HashCache(None)
        self._files: OrderedDict[tuple[Path, int, int], HypernetworkFile] = OrderedDict()
        self._handles: list[Any] = []

    def forget(self) -> None:
        """Take the hooks off and drop the built networks (the model is unloaded)."""
        self.remove()
        self._files.clear()

    def remove(self) -> None:
        """Take every hook off: the UNet computes as if no hypernetwork was ever used."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def apply(
        self, pipe: Any, prompt: str, on_status: Callable[[str], None] | None = None
    ) -> list[tuple[str, Path, str, float]]:
        """Apply exactly the hypernetworks ``prompt`` names to ``pipe``'s UNet.

        Returns ``(name, path, short hash, strength)`` per tag applied, in order.
        """
        self.remove()
        tags = hypernetwork_tags(prompt)
        if not tags:
            return []
        unet = _unet(pipe)
        folders = [Path(f) for f in self._folders()]
        found: list[tuple[str, Path]] = []
        for name, _strength in tags:
            path = find_file(name, folders, HYPERNETWORK_SUFFIXES)
            if path is None:
                where = ", ".join(str(f) for f in folders) or (
                    "any folder: there is no hypernetworks folder (A1111 and ComfyUI keep "
                    "them in models/hypernetworks)"
                )
                raise InvalidRequest(f"Hypernetwork '{name}' not found in {where}.")
            found.append((name, path))
        last = {path: strength for (_name, path), (_n, strength) in zip(found, tags, strict=True)}
        files = [self._file(path) for _name, path in found]
        widths = attention_widths(unet)
        for file in dict.fromkeys(files):
            _check_fits(file, widths, _context_width(unet), on_status)
        stack = [(file, last[file.path]) for file in files]
        self._hook(unet, stack)
        return [
            (name, path, self._hashes.sha256(path)[:HASH_LENGTH], last[path])
            for name, path in found
        ]

    def _file(self, path: Path) -> HypernetworkFile:
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in self._files:
            self._files.move_to_end(key)
            return self._files[key]
        log.info("Loading hypernetwork %s", path)
        file = read_hypernetwork(path)
        self._files[key] = file
        while len(self._files) > MAX_CACHED:
            self._files.popitem(last=False)
        return file

    def _hook(self, unet: Any, stack: list[tuple[HypernetworkFile, float]]) -> None:
        self._handles += add_hooks(unet, [(file.layers, strength) for file, strength in stack])


def add_hooks(unet: Any, stack: list[tuple[Mapping[int, tuple[Any, Any]], float]]) -> list[Any]:
    """Put pre-hooks on the key and value projections of every attention whose input
    width one of ``stack``'s (networks by width, strength) has networks for; returns the
    hook handles. Generation and training apply hypernetworks through this one place."""
    handles = []
    for attention in _attentions(unet):
        width = attention.to_k.in_features
        keys = [(layers[width][0], s) for layers, s in stack if width in layers]
        values = [(layers[width][1], s) for layers, s in stack if width in layers]
        if keys:
            handles.append(attention.to_k.register_forward_pre_hook(_changer(keys)))
            handles.append(attention.to_v.register_forward_pre_hook(_changer(values)))
    return handles


def _changer(chain: list[tuple[Any, float]]) -> Callable[[Any, tuple[Any, ...]], tuple[Any, ...]]:
    """A pre-hook that runs a projection's input through ``chain`` (network, strength)."""

    def change(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        for network, strength in chain:
            x = run_network(network, x, strength)
        return (x, *args[1:])

    return change


def _unet(pipe: Any) -> Any:
    """The pipeline's UNet; a model without one (the flow families) or an SDXL model is
    refused."""
    unet = getattr(pipe, "unet", None)
    if unet is None:
        found = flow_loras.flow_family(pipe)
        label = found[1] if found is not None else "this"
        raise InvalidRequest(
            f"Hypernetworks work with SD 1.x and SD 2.x models; {label} models have no UNet "
            "attention for them to change. Remove the <hypernet:…> tag."
        )
    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        raise InvalidRequest(
            "SDXL models have no hypernetworks: they are made for SD 1.x and SD 2.x models. "
            "Remove the <hypernet:…> tag or choose such a model."
        )
    return unet


def _attentions(unet: Any) -> list[Any]:
    """The UNet's attention modules with separate key and value projections."""
    return [
        module
        for module in unet.modules()
        if hasattr(module, "to_k")
        and hasattr(module, "to_v")
        and module.to_k is not None
        and module.to_v is not None
        and isinstance(getattr(module.to_k, "in_features", None), int)
    ]


def attention_widths(unet: Any) -> set[int]:
    """The input widths of the UNet's attention key projections (its contexts' widths)."""
    return {module.to_k.in_features for module in _attentions(unet)}


def _context_width(unet: Any) -> int | None:
    width = getattr(unet.config, "cross_attention_dim", None)
    return width if isinstance(width, int) else None


def _check_fits(
    file: HypernetworkFile,
    widths: set[int],
    context: int | None,
    on_status: Callable[[str], None] | None,
) -> None:
    """Refuse a file none of whose networks fit the model; say so when only its
    self-attention networks do (A1111 would apply those without a word)."""
    fitting = widths & set(file.widths)
    made_for = file.made_for()
    if not fitting:
        family = f" (made for {made_for} models)" if made_for else ""
        model = CONTEXT_FAMILIES.get(context or 0, f"a model with text width {context}")
        raise InvalidRequest(
            f"The hypernetwork {file.path.stem}{family} has networks for widths "
            f"{_listed(file.widths)}, none of which this model ({model}) has."
        )
    if context is not None and context not in file.layers and on_status:
        on_status(
            f"The hypernetwork {file.path.stem} has no network for this model's text width "
            f"{context}{f' (it is made for {made_for} models)' if made_for else ''}; only its "
            f"networks for widths {_listed(sorted(fitting))} are used."
        )


def _listed(widths: Iterable[int]) -> str:
    return ", ".join(str(w) for w in widths)
