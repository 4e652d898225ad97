"""scripts/gpu_check.sh on a machine without a usable GPU: it must say so and stop before building."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_check_refuses_without_a_gpu(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)  # hides any GPU there is
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA GPU is visible" in r.stdout or "CPU-only build" in r.stdout, r.stdout
    assert "nothing was built or run" in r.stdout
    text = (tmp_path / "gpu_check_results.txt").read_text()
    assert "no usable GPU" in text and "pip install" not in text
