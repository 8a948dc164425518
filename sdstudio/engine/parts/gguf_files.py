"""Reading the tensor table of a GGUF file (llama.cpp's format, used by city96's
quantized transformers) without loading any tensor.

A GGUF file is a small header (``GGUF``, a version, counts), key-value metadata, a
table of tensors (name, dimensions, type, offset) and then the tensor data. GGUF
lists a tensor's dimensions innermost first (``ne[0]`` is the row length), so a
``(out, in)`` weight is stored as ``[in, out]``; :func:`gguf_shapes` gives the
shapes in PyTorch's order. Every count and length is checked against limits and
the file's size before anything is allocated, so a damaged or hostile file is
refused with :class:`ModelError`; nothing in the file is executed.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from sdstudio.engine.errors import ModelError

MAGIC = b"GGUF"
MAX_TENSORS = 100_000
MAX_METADATA = 100_000
MAX_STRING = 1 << 20
MAX_ARRAY = 50_000_000
MAX_DIMS = 8
FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?"}
_SCALARS |= {10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True, slots=True)
class GgufTensor:
    """One entry of a GGUF tensor table."""

    shape: tuple[int, ...]
    """The logical shape, outermost first (PyTorch's order)."""
    kind: str
    """The GGML type's name: ``"F16"``, ``"BF16"``, ``"Q8_0"``, ``"Q4_K"`` ..."""
    offset: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class GgufLayout:
    """A GGUF file's architecture name and tensor table."""

    architecture: str
    tensors: dict[str, GgufTensor]


def gguf_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and logical shapes (PyTorch's order) of a GGUF file.

    Raises :class:`ModelError` for a file that is not GGUF, is truncated or damaged.
    """
    return {name: tensor.shape for name, tensor in read_gguf_layout(path).tensors.items()}


def gguf_quantization(path: Path) -> str:
    """The quantization of a GGUF file's weights: the quantized type holding the most
    values among its matrices (``"Q4_K"`` for a Q4_K_S file that keeps a few layers
    in Q5_K or Q6_K), else their float type (``"F16"``, ``"BF16"``)."""
    return layout_quantization(read_gguf_layout(path))


def layout_quantization(layout: GgufLayout) -> str:
    """:func:`gguf_quantization` of a layout already read."""
    quantized: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    for tensor in layout.tensors.values():
        if len(tensor.shape) < 2:
            continue
        values = 1
        for size in tensor.shape:
            values *= size
        (floats if tensor.kind in FLOAT_TYPES else quantized)[tensor.kind] += values
    counts = quantized or floats
    return counts.most_common(1)[0][0] if counts else "F32"


def read_gguf_layout(path: Path) -> GgufLayout:
    """The architecture and tensor table of a GGUF file, checked against its size.

    Raises :class:`ModelError` naming the file when it is not GGUF, is truncated or
    damaged, or uses a tensor type this version of the ``gguf`` package does not know.
    """
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            return _read(_Reader(file, size), size)
    except OSError as error:
        raise ModelError(f"{path.name} cannot be read: {error.strerror or error}.") from None
    except _NotGguf:
        raise ModelError(
            f"{path.name} is not a GGUF file: it does not start as one. Use a .gguf "
            "transformer file such as city96's quantized Flux files."
        ) from None
    except _Damaged as error:
        raise ModelError(
            f"{path.name} is truncated or damaged ({error}); download it again."
        ) from None


class _NotGguf(Exception):
    pass


class _Damaged(Exception):
    pass


class _Reader:
    """Little-endian reads that never run past the end of the file."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file = file
        self.size = size

    def bytes(self, count: int) -> bytes:
        if count > self.size - self.file.tell():
            raise _Damaged("it ends early")
        data = self.file.read(count)
        if len(data) != count:
            raise _Damaged("it ends early")
        return data

    def unpack(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.bytes(struct.calcsize(fmt)))[0]
        return value

    def integer(self, fmt: str) -> int:
        return int(self.unpack(fmt))

    def string(self) -> str:
        length = self.integer("<Q")
        if length > MAX_STRING:
            raise _Damaged(f"a text entry of {length:,} bytes")
        return self.bytes(length).decode("utf-8", errors="replace")

    def skip(self, count: int) -> None:
        if count > self.size - self.file.tell():
            raise _Damaged("it ends early")
        self.file.seek(count, os.SEEK_CUR)

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.integer("<I"), self.integer("<Q")
            if count > MAX_ARRAY:
                raise _Damaged(f"a metadata list of {count:,} entries")
            if item_kind in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[item_kind]))
            else:
                for _ in range(count):
                    self.value(item_kind)
            return None
        raise _Damaged(f"an unknown metadata type {kind}")


def _read(reader: _Reader, size: int) -> GgufLayout:
    if size < len(MAGIC) or reader.bytes(len(MAGIC)) != MAGIC:
        raise _NotGguf
    version = reader.integer("<I")
    if version not in (2, 3):
        raise _Damaged(f"GGUF version {version}, where 2 or 3 is read")
    tensor_count, metadata_count = reader.integer("<Q"), reader.integer("<Q")
    if tensor_count > MAX_TENSORS or metadata_count > MAX_METADATA:
        raise _Damaged(f"{tensor_count:,} tensors and {metadata_count:,} metadata entries")
    architecture, alignment = "", 32
    for _ in range(metadata_count):
        key = reader.string()
        value = reader.value(reader.integer("<I"))
        if key == "general.architecture" and isinstance(value, str):
            architecture = value
        elif key == "general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
    entries = [_tensor_entry(reader) for _ in range(tensor_count)]
    start = -(-reader.file.tell() // alignment) * alignment
    tensors: dict[str, GgufTensor] = {}
    for name, tensor in entries:
        if start + tensor.offset + tensor.nbytes > size:
            raise _Damaged(f"tensor {name} lies past the end of the file")
        tensors[name] = tensor
    return GgufLayout(architecture, tensors)


def _tensor_entry(reader: _Reader) -> tuple[str, GgufTensor]:
    name = reader.string()
    dims = reader.integer("<I")
    if dims > MAX_DIMS:
        raise _Damaged(f"tensor {name} with {dims} dimensions")
    ne = [reader.integer("<Q") for _ in range(dims)]
    type_id, offset = reader.integer("<I"), reader.integer("<Q")
    try:
        kind = GGMLQuantizationType(type_id)
    except ValueError:
        raise _Damaged(f"tensor {name} of an unknown type {type_id}") from None
    block, block_bytes = GGML_QUANT_SIZES[kind]
    values = 1
    for size in ne:
        values *= size
    if ne and ne[0] % block:
        raise _Damaged(f"tensor {name} whose rows do not fill {kind.name} blocks")
    return name, GgufTensor(tuple(reversed(ne)), kind.name, offset, values // block * block_bytes)
