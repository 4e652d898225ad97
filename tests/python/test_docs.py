"""The user guide's examples run.

Each page of docs/guide/ runs its ```python blocks in order in one namespace (a page is one
session), in a scratch folder, so the examples users copy stay true.
"""
import os
import re

import pytest


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GUIDE = os.path.join(ROOT, "docs", "guide")
PAGES = sorted(f for f in os.listdir(GUIDE) if f.endswith(".md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path):
    with open(path) as f:
        return BLOCK.findall(f.read())


def test_every_page_is_in_the_index():
    with open(os.path.join(GUIDE, "README.md")) as f:
        index = f.read()
    assert [p for p in PAGES if p != "README.md" and f"({p})" not in index] == []


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(os.path.join(GUIDE, p))])
def test_guide_page_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"guide_{page[:-3]}"}
    for i, code in enumerate(python_blocks(os.path.join(GUIDE, page))):
        exec(compile(code, f"{page}[block {i + 1}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.strip(), f"{page}: its examples print what they show"


def test_quickstart_export_agrees_with_the_model(tmp_path, monkeypatch, capsys):
    """The quick start's own check: ONNX Runtime within one quantization step of the model."""
    monkeypatch.chdir(tmp_path)
    ns = {}
    for code in python_blocks(os.path.join(GUIDE, "quickstart.md")):
        exec(code, ns)
    assert ns["torchqat"].onnx.lint_tensorrt("quickstart.onnx") == []
    step = float(ns["model"][-1]._input_quantizer.amax) / 127  # the Linear's input step bounds the logit error
    w = ns["model"][-1].weight.detach().abs().sum(1).max().item()
    assert float(abs(ns["onnx_out"] - ns["torch_out"]).max()) <= w * step
