"""The benchmark scripts still run (`--tiny --device cpu`, as subprocesses): their tables and JSON.

Both scripts start at once (each takes a few seconds, mostly importing torch and ART).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from benchmark_runner import BENCHMARKS, ScriptRun, script_env

TIMEOUT_S = 50
ATTACK_ROWS = (
    "(a) medbench matrix path",
    "(b) hand-written torch",
    "(c) ART default (batch 32)",
    "(c') ART default (equal batch)",
    "(d) torchattacks",
)
ROW_FIELDS = {
    "method",
    "label",
    "times_s",
    "median_s",
    "min_s",
    "max_s",
    "iqr_s",
    "cpu_median_s",
    "image_steps_per_s",
    "tflops",
    "peak_memory_mib",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ScriptRun]:
    directory = tmp_path_factory.mktemp("benchmarks")
    env = script_env(directory)
    commands = {
        "attack": [
            str(BENCHMARKS / "attack_throughput.py"),
            *("--tiny", "--device", "cpu", "--attack", "pgd", "fgsm"),
        ],
        "kernels": [str(BENCHMARKS / "kernels.py"), "--tiny", "--device", "cpu"],
    }
    processes = {
        name: subprocess.Popen(
            [sys.executable, *command, "--json", str(directory / f"{name}.json")],
            cwd=directory,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in commands.items()
    }
    results = {}
    for name, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in processes.values():
                other.kill()
            pytest.fail(f"benchmarks/{commands[name][0]} --tiny took more than {TIMEOUT_S} s")
        path = directory / f"{name}.json"
        payload = json.loads(path.read_text()) if path.exists() else {}
        results[name] = ScriptRun(process.returncode, stdout, stderr, payload)
    return results


def test_attack_throughput_prints_every_row(runs: dict[str, ScriptRun]) -> None:
    run = runs["attack"]
    assert run.returncode == 0, run.stderr
    for attack in ("pgd", "fgsm"):
        assert f"attack {attack}:" in run.stdout
    for label in ATTACK_ROWS:
        # torchattacks is optional: its row is either timed or reported as skipped
        assert run.stdout.count(label) == 2, label
    assert run.stdout.count("throughput ratios: b/a = ") == 2
    assert "forward FLOPs (FlopCounterMode" in run.stdout


def test_attack_throughput_json_has_the_fields(runs: dict[str, ScriptRun]) -> None:
    payload = runs["attack"].payload
    assert payload["config"]["tiny"] is True
    assert payload["config"]["model"] == "smallcnn"
    assert payload["config"]["flops_forward"] > 0
    assert {"torch", "art", "device", "torch_threads"} <= set(payload["environment"])
    for attack, steps in (("pgd", 2), ("fgsm", 1)):
        report = payload["attacks"][attack]
        assert report["steps"] == steps
        methods = {row["method"] for row in report["rows"]} | set(report["skipped"])
        assert methods == {"medbench", "handwritten", "art_default", "art_equal_batch", "torchattacks"}
        for row in report["rows"]:
            assert set(row) >= ROW_FIELDS
            assert row["median_s"] > 0 and row["image_steps_per_s"] > 0
            assert len(row["times_s"]) == 1
        assert report["ratios"]["b/a"] > 0 and report["ratios"]["a/c"] > 0
        assert {"max_abs_diff", "agree", "tolerance", "same_random_start"} <= set(report["agreement"])


def test_matrix_path_and_handwritten_loop_agree(runs: dict[str, ScriptRun]) -> None:
    run = runs["attack"]
    for attack in ("pgd", "fgsm"):
        agreement = run.payload["attacks"][attack]["agreement"]
        assert agreement["agree"], (attack, agreement)
        assert agreement["max_abs_diff"] <= 1e-6
        assert agreement["linf_a"] <= 8 / 255 + 1e-6
    assert run.payload["attacks"]["pgd"]["agreement"]["same_random_start"]
    assert run.stdout.count("-> AGREE") == 2


def test_kernels_prints_and_writes_the_timings(runs: dict[str, ScriptRun]) -> None:
    run = runs["kernels"]
    assert run.returncode == 0, run.stderr
    for row in (
        "medbench soft ",
        "medbench soft fwd+bwd",
        "medbench hard",
        "scikit-image",
        "soft GLCM float32 vs float64",
        "medbench blockwise_dct",
        "scipy.fft.dctn",
    ):
        assert row in run.stdout, row
    glcm, dct = run.payload["glcm"], run.payload["dct"]
    assert (
        glcm["config"]["angles"] == 8 and glcm["config"]["distance"] == 3 and glcm["config"]["levels"] == 32
    )
    assert set(glcm["timings"]) == {"medbench soft", "medbench soft fwd+bwd", "medbench hard", "scikit-image"}
    assert glcm["timings"]["medbench soft"]["speedup_vs_skimage"] > 0
    assert glcm["hard_vs_skimage_max_abs_diff"] < 1e-9
    assert glcm["soft_float32_vs_float64_max_rel_diff"] < 1e-4
    assert dct["config"]["block"] == [8, 8, 8]
    assert dct["timings"]["medbench blockwise_dct"]["speedup_vs_scipy"] > 0
    assert dct["max_abs_diff"] < 1e-4
