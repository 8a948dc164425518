"""The metadata corpus benchmark builds its images, reads them and prints a row per tool."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from metadata_samples_corpus import corpus

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "metadata_corpus.py"


def load():
    spec = importlib.util.spec_from_file_location("metadata_corpus", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while it loads
    spec.loader.exec_module(module)
    return module


def test_the_table_has_a_row_per_tool(capsys) -> None:
    assert load().main(["--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    tools = list(dict.fromkeys(sample.tool for sample in corpus()))
    assert lines[0].split()[:3] == ["tool", "imgs", "recog"]
    rows = [line for line in lines[2:] if line[:1].isalnum()]
    assert [row[: len(tool)] for row, tool in zip(rows, tools, strict=False)] == tools
    assert any(line.startswith("total") for line in lines)
    data = json.loads(lines[-1])
    assert list(data["tools"]) == tools
    assert sum(tool["images"] for tool in data["tools"].values()) == len(corpus())


def test_one_tool_can_be_chosen(capsys) -> None:
    assert load().main(["--tool", "sdstudio", "--details"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows[0] == "sdstudio" and "A1111" not in rows
