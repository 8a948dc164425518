"""Generation settings that JPEG and WebP images carry in EXIF.

- AUTOMATIC1111 writes its ``parameters`` text as the UserComment (0x9286) of
  the Exif IFD: an 8-byte charset header (``UNICODE\\0``, ``ASCII\\0\\0\\0``)
  followed by the text, UTF-16 for Unicode (big-endian from A1111 through
  piexif; little-endian from others).
- Fooocus writes the text (or its JSON) as a plain string UserComment in IFD0
  and its scheme (``fooocus`` or ``a1111``) as the MakerNote (0x927C).
- ComfyUI's WebP writer stores ``prompt:<json>`` in Model (0x0110) and
  ``workflow:<json>`` in Make (0x010F); other ComfyUI savers write
  ``Prompt: <json>`` and ``Workflow: <json>`` in ImageDescription (0x010E) or
  Make. Either label is read, whatever its case, under ``prompt``/``workflow``.
- SwarmUI and NovelAI write their JSON as the UserComment; it is read as
  ``parameters``, whose readers recognise the JSON.
- Stability Matrix's WebP images hold its ``parameters-json`` object (with a
  ``PositivePrompt``) in ImageDescription and its project (``smproj``, an
  object with a ``ProjectType``) in Software (0x0131). Each is read under its
  PNG name only when the text is a JSON object of that shape. These tags are
  ASCII by the standard, but tools write UTF-8 there; Pillow gives such bytes
  as Latin-1, so text that is valid UTF-8 is decoded as UTF-8.
"""

from __future__ import annotations

from PIL import Image

from sdstudio.engine.metadata.safe_text import load_json

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
MAKER_NOTE = 0x927C
IMAGE_DESCRIPTION = 0x010E
SOFTWARE = 0x0131
_COMFYUI_TAGS = (IMAGE_DESCRIPTION, 0x010F, 0x0110)  # ImageDescription, Make, Model
# Stability Matrix's texts: the EXIF tag, the PNG name, a property the JSON object holds.
_STABILITY_MATRIX = (
    (IMAGE_DESCRIPTION, "parameters-json", "PositivePrompt"),
    (SOFTWARE, "smproj", "ProjectType"),
)
_COMFYUI_KEYS = ("prompt", "workflow")
_SCHEMES = ("fooocus", "a1111")


def exif_bytes_texts(data: bytes) -> dict[str, str]:
    """The metadata texts in raw EXIF data (with or without its ``Exif\\0\\0`` header).

    Never raises: unreadable EXIF gives an empty dict.
    """
    exif = Image.Exif()
    try:
        exif.load(data)
    except Exception:  # damaged EXIF is only missing metadata
        return {}
    return exif_texts(exif)


def exif_texts(exif: Image.Exif) -> dict[str, str]:
    """The metadata texts in an image's EXIF, under the PNG chunk names they stand for.

    Never raises: unreadable EXIF gives an empty dict.
    """
    texts: dict[str, str] = {}
    try:
        ifd0 = dict(exif)
        exif_ifd = dict(exif.get_ifd(EXIF_IFD))
    except Exception:  # damaged EXIF is only missing metadata
        return texts
    comment = exif_ifd.get(USER_COMMENT, ifd0.get(USER_COMMENT))
    if comment is not None:
        decoded = decode_user_comment(comment)
        if decoded:
            texts["parameters"] = decoded
    scheme = ifd0.get(MAKER_NOTE)
    if isinstance(scheme, str) and scheme.strip().casefold() in _SCHEMES:
        texts["fooocus_scheme"] = scheme.strip().casefold()
    for tag in _COMFYUI_TAGS:
        value = ifd0.get(tag)
        if isinstance(value, str):
            label, _, rest = value.partition(":")
            key, graph = label.strip().casefold(), rest.strip()
            if key in _COMFYUI_KEYS and key not in texts and graph.startswith("{"):
                texts[key] = graph
    for tag, key, marker in _STABILITY_MATRIX:
        value = _utf8(ifd0.get(tag))
        if value and _is_object_with(value, marker):
            texts[key] = value.strip()
    return texts


def _utf8(value: object) -> str:
    """An EXIF ASCII value as text, read as UTF-8 when its bytes are UTF-8."""
    if isinstance(value, str):
        try:
            data = value.encode("latin-1")
        except UnicodeEncodeError:
            return value
    elif isinstance(value, bytes):
        data = value
    else:
        return ""
    try:
        return data.decode("utf-8").strip("\0")
    except UnicodeDecodeError:
        return data.decode("latin-1").strip("\0")


def _is_object_with(value: str, key: str) -> bool:
    """Whether ``value`` is the text of a JSON object that has ``key``."""
    if not value.lstrip().startswith("{"):
        return False
    data = load_json(value)
    return isinstance(data, dict) and key in data


def decode_user_comment(value: object) -> str:
    """The text of an EXIF UserComment, given as bytes with a charset header or as text.

    Never raises; anything that is not a comment gives ``""``.
    """
    if isinstance(value, str):
        return value.strip("\0").strip()
    if not isinstance(value, bytes):
        return ""
    header, body = value[:8], value[8:]
    if header == b"UNICODE\0":
        text = _decode_utf16(body)
    elif header == b"ASCII\0\0\0":
        text = body.decode("utf-8", errors="replace")
    elif header == b"JIS\0\0\0\0\0":
        text = body.decode("shift_jis", errors="replace")
    elif header == b"\0" * 8:
        text = body.decode("utf-8", errors="replace")
    else:
        text = value.decode("utf-8", errors="replace")
    return text.strip("\0").strip()


def _decode_utf16(body: bytes) -> str:
    if body.startswith(b"\xfe\xff"):
        return body[2:].decode("utf-16-be", errors="replace")
    if body.startswith(b"\xff\xfe"):
        return body[2:].decode("utf-16-le", errors="replace")
    body = body[: len(body) // 2 * 2]
    # Mostly-ASCII text has a zero high byte in nearly every unit: in the even
    # bytes for big-endian, in the odd bytes for little-endian.
    zeros_even = body[0::2].count(0)
    zeros_odd = body[1::2].count(0)
    encoding = "utf-16-le" if zeros_odd > zeros_even else "utf-16-be"
    return body.decode(encoding, errors="replace")
