"""The finished embedding file, in the layout AUTOMATIC1111, ComfyUI and diffusers load.

SD 1.x/2.x: one tensor ``emb_params`` of shape (vectors, width). SDXL: ``clip_l`` and
``clip_g``, the vectors for each text encoder. The header metadata holds what A1111's
``.pt`` embeddings carry besides the vectors: ``name``, ``step`` and
``sd_checkpoint_name`` (strings, as safetensors metadata must be).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.fileio import write_atomically
from sdstudio.engine.network_files import EMBEDDING_SUFFIXES, may_be_embedding

SDXL_KEYS = ("clip_l", "clip_g")


def initial_vectors(
    tokenizer: Any, token_embedding: Any, init_text: str, count: int
) -> torch.Tensor:
    """``count`` vectors from the token embeddings of ``init_text``, as A1111 makes them:
    vector ``i`` is the init text's token ``i * tokens // count`` (so one token is repeated,
    more tokens than vectors are spread out); all zeros when the text has no tokens."""
    ids = tokenizer(init_text, add_special_tokens=False).input_ids if init_text else []
    weight = token_embedding.weight.detach()
    vectors = torch.zeros((count, weight.shape[1]), dtype=torch.float32)
    if ids:
        embedded = weight[torch.tensor(ids, device=weight.device)].float().cpu()
        for index in range(count):
            vectors[index] = embedded[index * len(ids) // count]
    return vectors


def embedding_tensors(vectors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's tensors: ``emb_params`` for one text encoder, ``clip_l``/``clip_g`` for two."""
    cpu = [v.detach().float().cpu().contiguous() for v in vectors]
    if len(cpu) == 1:
        return {"emb_params": cpu[0]}
    return dict(zip(SDXL_KEYS, cpu, strict=True))


def embedding_bytes(vectors: list[torch.Tensor], *, name: str, step: int, model_name: str) -> bytes:
    """A safetensors embedding's bytes, with A1111's ``name``/``step``/``sd_checkpoint_name``."""
    from safetensors.torch import save

    metadata = {"name": name, "step": str(step), "sd_checkpoint_name": model_name}
    return bytes(save(embedding_tensors(vectors), metadata=metadata))


def write_embedding(path: Path, data: bytes) -> Path:
    """Write the file atomically (it appears whole or not at all) and return its path."""
    return write_atomically(path, data)


def check_free(
    names: list[str], output_dir: Path, folders: tuple[Path, ...], overwrite: bool
) -> None:
    """Refuse names an embedding already has: a prompt word finds one file, so two files of
    one name would make the result depend on folder order. With ``overwrite`` a file of
    that name in ``output_dir`` may be replaced; one elsewhere is still refused."""
    for name in names:
        target = (output_dir / f"{name}.safetensors").resolve()
        for found in _embeddings_named(name, (output_dir, *folders)):
            if overwrite and found.resolve() == target:
                continue
            hint = " (use --overwrite to replace it)" if found.resolve() == target else ""
            raise InvalidRequest(
                f"An embedding named {name!r} already exists: {found}{hint}. Choose another --name."
            )


def _embeddings_named(name: str, folders: tuple[Path, ...]) -> list[Path]:
    """Embedding files (not LoRAs or checkpoints of the same stem) named ``name``, any case."""
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for directory, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for file_name in filenames:
                path = Path(directory) / file_name
                if (
                    path.stem.lower() == name.lower()
                    and path.suffix.lower() in EMBEDDING_SUFFIXES
                    and may_be_embedding(path)
                ):
                    found.append(path)
    return found
