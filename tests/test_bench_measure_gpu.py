"""Tests of scripts/bench_measure.py's gpu section (scripts/bench_measure_gpu.py), on a CPU at a tiny size:
a 2-layer GPT-2-shaped model, 2 windows. The authors' package is not installed in this environment, so the
section reports it as such; its run next to the package is checked by hand (see the module's docstring).

    python -m pytest tests/test_bench_measure_gpu.py -q
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: fastest for a tiny model on a shared machine


def bench(*args):
    return subprocess.run([sys.executable, "-m", "scripts.bench_measure", "--sections=gpu", *args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300)


def test_gpu_section_writes_the_numbers_the_suite_reads(tmp_path, data_dir):
    result = bench("--device=cpu", "--windows=2", "--layers=2", f"--out_dir={tmp_path}",
                   f"--data_dir={data_dir}", f"--authors_python={sys.executable}")
    assert result.returncode == 0, result.stderr[-3000:]
    gpu = json.loads((tmp_path / "bench_measure.json").read_text())["gpu"]
    assert (gpu["device"], gpu["windows"], gpu["tokens"], gpu["layers"]) == ("cpu", 2, 512, 2)
    assert [(r["dtype"], r["batch_size"]) for r in gpu["ours"]] == [("float32", 1), ("float32", 16),
                                                                    ("bfloat16", 16)]
    for r in gpu["ours"]:  # three timed runs after the warm-up; windows/s from their median
        assert len(r["timed"]) == 3 and r["windows_per_s"] == pytest.approx(2 / r["median_s"])
    assert gpu["speedup_batch16"] == pytest.approx(gpu["ours"][0]["median_s"] / gpu["ours"][1]["median_s"])
    assert len(gpu["share_ratios"]) == 3
    assert gpu["share"] == pytest.approx(statistics.median(gpu["share_ratios"]) - 1)
    assert gpu["package"] is None  # not installed here
    report = (tmp_path / "bench_measure.md").read_text()
    assert "--sections=gpu" in report and "device: cpu (CPU); torch " in report
    assert "embedding_condensation is not installed" in report and "pip install --no-deps" in report


@pytest.mark.parametrize("args, words", [(["--device=tpu"], ["--device must be cpu or cuda"]),
                                         (["--windows=0"], ["--windows", "at least 1"]),
                                         (["--sections=gpu,authorz"], ["--sections=gpu,authorz", "scaling"])])
def test_bad_input_is_one_clear_line(args, words, tmp_path):
    result = bench(*args, f"--out_dir={tmp_path}")
    message = result.stderr.strip()
    assert result.returncode != 0 and "Traceback" not in message and len(message.splitlines()) == 1, message
    assert message.startswith("error:") and all(w in message for w in words), message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    test_bad_input_is_one_clear_line(["--device=cuda"], ["--device=cuda", "no CUDA GPU"], tmp_path)
