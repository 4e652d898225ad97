"""torchqat::calibrate with a process_group: two processes (tests/cpp/dist_calib_tool.cpp, gloo over
a FileStore) each calibrate on half the batches and must both load the amax one process loads on
all of them: exactly for method max (running max all-reduced with MAX) and for percentile (one bin
width on every rank, counts summed: the one-process histogram). Ranks that disagree on the model
get the error on every rank. The tool is found as test_cpp_flow.py finds flow_tool."""
import os
import pathlib
import subprocess

import pytest
import torch.distributed as dist

_HERE = pathlib.Path(__file__).resolve().parent
_BUILD_DIR = pathlib.Path(os.environ.get("TORCHQAT_BUILD_DIR", _HERE / ".." / ".." / "build"))
_TOOL = _BUILD_DIR / "tests" / "cpp" / "torchqat_dist_calib_tool"

pytestmark = [
    pytest.mark.skipif(not dist.is_gloo_available(), reason="this torch has no gloo backend"),
    pytest.mark.skipif(not _TOOL.exists(), reason="torchqat_dist_calib_tool not built (CMake found no gloo headers; "
                       "tests/cpp/test_dist_calib.cpp covers the merge)"),
]


def _run(tmp_path, world, extra_rank=None):
    store = tmp_path / f"store{world}"
    procs = []
    for rank in range(world):
        args = [str(_TOOL), str(tmp_path / f"amax{world}_{rank}.txt"), str(rank), str(world), str(store)]
        if rank == extra_rank:
            args.append("extra")
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    codes = []
    try:
        for p in procs:
            p.communicate(timeout=60)
            codes.append(p.returncode)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes, [(tmp_path / f"amax{world}_{r}.txt").read_text() for r in range(world)]


def _parse(text):
    rows = {}
    for line in text.splitlines():
        method, name, *values = line.split()
        rows[(method, name)] = [float(v) for v in values]
    return rows


def test_two_ranks_load_the_one_process_amax(tmp_path):
    codes, (one,) = _run(tmp_path, 1)
    assert codes == [0], one
    codes, (r0, r1) = _run(tmp_path, 2)
    assert codes == [0, 0], (r0, r1)
    single, rank0, rank1 = _parse(one), _parse(r0), _parse(r1)
    assert {m for m, _ in single} == {"max", "percentile"} and len(single) == 8
    assert rank0 == single
    assert rank1 == single


def test_ranks_with_different_models_fail_on_every_rank(tmp_path):
    codes, texts = _run(tmp_path, 2, extra_rank=1)
    assert codes == [3, 3], texts
    for t in texts:
        assert "ranks disagree on the number of quantizers" in t
