"""Write the CLIP tokenizer files (vocab.json, merges.txt) from CLIP's BPE vocabulary.

The vocabulary is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence), which the
open-clip-torch wheel carries as ``open_clip/bpe_simple_vocab_16e6.txt.gz``::

    pip download open_clip_torch --no-deps -d /tmp/oc
    python packaging/make_clip_vocab.py /tmp/oc/open_clip_torch-*.whl \
        resources/model_configs/clip_tokenizer

The output matches the tokenizer files of ``openai/clip-vit-large-patch14``: 49408 tokens
(256 byte characters, their ``</w>`` forms, 48894 merges, then ``<|startoftext|>`` and
``<|endoftext|>``), built exactly as CLIP's ``SimpleTokenizer`` builds its table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

from sdstudio.testing.vocab import byte_to_unicode

VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
SPECIAL = {"bos": "<|startoftext|>", "eos": "<|endoftext|>"}


def read_bpe_lines(source: Path) -> list[str]:
    """The lines of the BPE file, from a wheel (zip) or the ``.txt.gz`` file itself."""
    if source.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(source) as wheel:
            data = gzip.decompress(wheel.read(VOCAB_MEMBER))
    else:
        data = gzip.decompress(source.read_bytes())
    return data.decode("utf-8").split("\n")


def build(lines: list[str]) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (token -> id) and its merge lines, as ``SimpleTokenizer`` makes them."""
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(byte_to_unicode().values())
    tokens = byte_chars + [char + "</w>" for char in byte_chars]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [SPECIAL["bos"], SPECIAL["eos"]]
    return {token: index for index, token in enumerate(tokens)}, merges


def write(out_dir: Path, vocab: dict[str, int], merges: list[str]) -> None:
    """Write vocab.json and merges.txt as the Hugging Face CLIP tokenizer files are written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )


def main() -> None:
    """Command line: the wheel (or .txt.gz) and the output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="open_clip_torch wheel or bpe .txt.gz")
    parser.add_argument("out_dir", type=Path, help="folder for vocab.json and merges.txt")
    args = parser.parse_args()
    vocab, merges = build(read_bpe_lines(args.source))
    if len(vocab) != 49408:
        raise SystemExit(f"expected 49408 tokens, got {len(vocab)}")
    write(args.out_dir, vocab, merges)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out_dir}")


if __name__ == "__main__":
    main()
