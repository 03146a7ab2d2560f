"""Performance options: bf16 autocast, channels-last, torch.compile, cuDNN autotuning, and
``--eval-batch-size auto``; each gives the robust accuracy of fp32 within the documented tolerance.

The robust-accuracy comparisons share one smallcnn trained for a few epochs on phantom2d
(clean accuracy about 0.74, robust accuracy between chance and clean at the budgets used).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from medbench.api import DatasetBundle, DefendedModel
from medbench.attacking.evaluation import as_attack_result, eval_batches
from medbench.building.cache import ModelCache
from medbench.building.defending import DefenseBuilder
from medbench.cli import main
from medbench.config.spec import TrainingSettings, spec_from_mapping, with_overrides
from medbench.engine.planning import plan_matrix
from medbench.engine.runner import MatrixRunner
from medbench.errors import UsageError
from medbench.plugins.host import PluginHost, load_plugins
from medbench.reporting.progress import QuietProgress
from medbench.wrapping.acceleration import (
    BF16_TOLERANCE,
    CPU_EVAL_BATCH_SIZE,
    LAYOUT_TOLERANCE,
    AcceleratedModule,
    Acceleration,
    CompileError,
    accelerate,
    choose_batch_size,
    split_batches,
)
from medbench.wrapping.estimators import (
    classifier_estimator,
    frozen_parameters,
    input_gradient,
    predict_logits,
)

CPU = torch.device("cpu")
N_EVAL = 120
BUDGETS = (2 / 255, 4 / 255)
ATTACKS = ("fgsm", "pgd")
TINY = [
    "run", "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none", "--attack", "fgsm",
    "--eps", "8/255", "--n-eval", "16", "--epochs", "0",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16", "--json",
]  # fmt: skip


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return load_plugins(check=False)


@pytest.fixture(scope="module")
def trained(
    host: PluginHost, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DefendedModel, DatasetBundle]:
    """smallcnn trained 4 epochs on 800 phantom2d images of 32x32 (about 15 s on one core)."""
    dataset = host.registries.datasets.get("phantom2d").configured({"n_samples": 800, "image_size": 32})
    bundle = dataset.load(None, 0)
    standard = host.registries.defenses.get("none").configured({})
    builder = DefenseBuilder(
        dataset=bundle,
        model_name="smallcnn",
        model=host.registries.models.get("smallcnn").configured({}),
        weights=None,
        standard=standard,
        training=TrainingSettings(epochs=4),
        device=CPU,
        seed=0,
        cache=ModelCache(tmp_path_factory.mktemp("cache")),
    )
    return builder.build([standard]), bundle


def _test_data(bundle: DatasetBundle, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([bundle.test[i][0] for i in range(N_EVAL)]).to(device)
    y = torch.stack([torch.as_tensor(bundle.test[i][1]) for i in range(N_EVAL)]).to(device)
    return x, y


def accuracies(
    host: PluginHost,
    trained: tuple[DefendedModel, DatasetBundle],
    acceleration: Acceleration | None,
    device: torch.device = CPU,
) -> dict[str, float]:
    """Clean accuracy and robust accuracy per attack and budget, under ``acceleration``."""
    defended = copy.deepcopy(trained[0]).to(device)
    bundle = trained[1]
    estimator = classifier_estimator(defended, bundle, device, acceleration=acceleration)
    x, y = _test_data(bundle, device)
    result: dict[str, float] = {}
    with frozen_parameters(defended):
        result["clean"] = float((predict_logits(estimator, x).argmax(1) == y).float().mean())
        for name in ATTACKS:
            attack = host.registries.attacks.get(name).configured({})
            for budget in BUDGETS:
                x_adv = as_attack_result(attack.generate(estimator, x, y, budget, seed=0)).x_adv
                assert x_adv.dtype == torch.float32
                assert float((x_adv - x).abs().max()) <= budget + 1e-6
                predictions = predict_logits(estimator, x_adv).argmax(1)
                result[f"{name}@{round(budget * 255)}"] = float((predictions == y).float().mean())
    return result


def _assert_close(reference: dict[str, float], other: dict[str, float], tolerance: float) -> None:
    differences = {key: abs(reference[key] - other[key]) for key in reference}
    assert max(differences.values()) <= tolerance, f"fp32 {reference} vs {other}"


@pytest.fixture(scope="module")
def fp32(host: PluginHost, trained: tuple[DefendedModel, DatasetBundle]) -> dict[str, float]:
    result = accuracies(host, trained, None)
    # the comparison means something: a trained model that the attacks partly break
    assert result["clean"] > 0.65
    assert 0 < result["pgd@4"] < result["clean"]
    return result


# --------------------------------------------------------------------------- CPU


def test_bf16_robust_accuracy_is_within_the_documented_tolerance_of_fp32(
    host: PluginHost, trained: tuple[DefendedModel, DatasetBundle], fp32: dict[str, float]
) -> None:
    bf16 = accuracies(host, trained, Acceleration(precision="bf16"))
    _assert_close(fp32, bf16, BF16_TOLERANCE)


def test_bf16_logits_and_input_gradients_are_float32(trained: tuple[DefendedModel, DatasetBundle]) -> None:
    defended, bundle = copy.deepcopy(trained[0]), trained[1]
    x, y = _test_data(bundle, CPU)
    reference = classifier_estimator(defended, bundle, CPU)
    bf16 = classifier_estimator(defended, bundle, CPU, acceleration=Acceleration(precision="bf16"))
    with frozen_parameters(defended):
        logits = predict_logits(bf16, x)
        gradient = input_gradient(bf16, x, y)
        expected = input_gradient(reference, x, y)
    assert logits.dtype == torch.float32
    assert gradient.dtype == torch.float32 and gradient.shape == x.shape
    assert torch.isfinite(gradient).all()
    agreement = float((gradient.sign() == expected.sign()).float().mean())
    assert agreement > 0.9, "bf16 input gradients point where fp32's do"


def test_channels_last_gives_the_same_robust_accuracy_and_gradients(
    host: PluginHost, trained: tuple[DefendedModel, DatasetBundle], fp32: dict[str, float]
) -> None:
    _assert_close(fp32, accuracies(host, trained, Acceleration(channels_last=True)), LAYOUT_TOLERANCE)
    defended, bundle = copy.deepcopy(trained[0]), trained[1]
    x, y = _test_data(bundle, CPU)
    with frozen_parameters(defended):
        expected = input_gradient(classifier_estimator(defended, bundle, CPU), x, y)
        estimator = classifier_estimator(defended, bundle, CPU, acceleration=Acceleration(channels_last=True))
        gradient = input_gradient(estimator, x, y)
    assert gradient.is_contiguous(), "the gradient comes back in the input's layout"
    assert torch.allclose(gradient, expected, rtol=1e-4, atol=1e-6)


def test_channels_last_volumes_use_the_3d_layout() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    model(torch.rand(1, 1, 4, 4, 4))
    wrapped = accelerate(model, Acceleration(channels_last=True), CPU, (1, 4, 4, 4))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.rand(2, 1, 4, 4, 4, requires_grad=True)
    (gradient,) = torch.autograd.grad(wrapped(x).sum(), x)
    assert gradient.is_contiguous()
    assert torch.allclose(wrapped(x), model(x.detach()), atol=1e-6)


def test_no_option_leaves_the_network_unwrapped() -> None:
    model = torch.nn.Linear(2, 2)
    assert accelerate(model, Acceleration(), CPU, (2,)) is model
    assert accelerate(model, Acceleration(cudnn_benchmark=True), CPU, (2,)) is model
    assert isinstance(accelerate(model, Acceleration(precision="bf16"), CPU, (2,)), AcceleratedModule)


def _compiler_works() -> bool:
    return any(shutil.which(name) for name in ("cc", "gcc", "clang", "g++", "c++"))


@pytest.mark.slow
@pytest.mark.skipif(
    not _compiler_works(), reason="torch.compile (inductor) needs a C/C++ compiler on the CPU"
)
def test_compile_gives_the_same_robust_accuracy_on_the_cpu(
    host: PluginHost, trained: tuple[DefendedModel, DatasetBundle], fp32: dict[str, float]
) -> None:
    torch._dynamo.reset()
    try:
        _assert_close(fp32, accuracies(host, trained, Acceleration(compile=True)), LAYOUT_TOLERANCE)
    finally:
        torch._dynamo.reset()


def test_a_failing_torch_compile_is_a_one_line_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_compile(module: Any, **_: Any) -> Any:
        def compiled(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore details")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(CompileError, match=r"^--compile: torch\.compile failed"):
        accelerate(torch.nn.Linear(4, 2), Acceleration(compile=True), CPU, (4,))
    code, _, err = _run([*TINY, "--compile", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("medbench: error: --compile: torch.compile failed"), err
    assert "InvalidCxxCompiler: No working C++ compiler found; run without --compile" in lines[-1]
    assert "Traceback" not in err


def test_the_network_s_own_error_is_not_blamed_on_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda module, **_: module)  # "compiles" to itself
    wrapped = AcceleratedModule(torch.nn.Linear(4, 2), Acceleration(compile=True), CPU)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        wrapped(torch.rand(2, 3))


# --------------------------------------------------------------------------- options and usage


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "bf61"], "--precision: unknown precision 'bf61'; did you mean 'bf16'?"),
        (
            ["--cudnn-benchmark", "--deterministic"],
            "--cudnn-benchmark cannot be combined with --deterministic",
        ),
        (["--eval-batch-size", "big"], "--eval-batch-size must be a positive integer or 'auto', got 'big'"),
        (["--eval-batch-size", "0"], "--eval-batch-size must be a positive integer or 'auto', got 0"),
    ],
)
def test_bad_options_are_one_line_usage_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    code, out, err = _run([*TINY, *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medbench: error: {message}"), err
    assert out == ""


def test_spec_keys(tmp_path: Path) -> None:
    spec = spec_from_mapping(
        {
            "eval_batch_size": "auto",
            "precision": "BFloat16",
            "channels_last": True,
            "compile": False,
            "cudnn_benchmark": True,
        },
        "test",
    )
    assert (spec.eval_batch_size, spec.precision, spec.channels_last, spec.cudnn_benchmark) == (
        "auto",
        "bf16",
        True,
        True,
    )
    assert Acceleration.of(spec) == Acceleration("bf16", True, False, True)
    overridden = with_overrides(spec, {"precision": "fp32", "channels_last": False, "eval_batch_size": "64"})
    assert (overridden.precision, overridden.channels_last, overridden.eval_batch_size) == ("fp32", False, 64)
    assert overridden.cudnn_benchmark, "options not given keep the spec's value"
    with pytest.raises(UsageError, match="spec key 'channels_last' must be true or false"):
        spec_from_mapping({"channels_last": "yes"}, "test")
    with pytest.raises(UsageError, match="did you mean 'fp32'"):
        spec_from_mapping({"precision": "fp23"}, "test")
    with pytest.raises(UsageError, match="positive integer or 'auto'"):
        spec_from_mapping({"eval_batch_size": 0}, "test")


def test_precision_is_part_of_the_cell_key_and_layout_options_are_not(host: PluginHost) -> None:
    base = {
        "dataset": "phantom2d",
        "attacks": ["fgsm"],
        "settings": {"dataset": {"phantom2d": {"n_samples": 200, "image_size": 16}}},
    }

    def keys(**options: Any) -> list[str]:
        spec = spec_from_mapping({**base, **options}, "test")
        return [cell.key for cell in plan_matrix(spec, host, CPU).cells]

    fp32 = keys()
    assert keys(precision="bf16") != fp32
    assert keys(precision="fp32") == fp32, "fp32 keys are those of runs before the option existed"
    assert keys(channels_last=True, compile=True, cudnn_benchmark=True, eval_batch_size="auto") == fp32


def test_auto_batch_size_on_the_cpu_finishes_and_options_are_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        *TINY,
        "--eval-batch-size",
        "auto",
        "--precision",
        "bf16",
        "--channels-last",
        "--tracking-uri",
        uri,
    ]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    assert f"eval batch size {CPU_EVAL_BATCH_SIZE} (auto: the fixed CPU default)" in " ".join(err.split())
    document = json.loads(out)
    assert all(cell["status"] == "FINISHED" for cell in document["cells"])
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(document["parent_run_id"]).data.params
    assert (parent["eval_batch_size"], parent["precision"], parent["channels_last"]) == (
        "auto",
        "bf16",
        "True",
    )
    assert (parent["compile"], parent["cudnn_benchmark"]) == ("False", "False")
    cell = client.get_run(document["cells"][0]["run_id"]).data.params
    assert (cell["eval_batch_size"], cell["precision"], cell["channels_last"]) == (
        str(CPU_EVAL_BATCH_SIZE),
        "bf16",
        "True",
    )


# --------------------------------------------------------------------------- automatic batch size


@pytest.mark.parametrize(
    ("per_sample", "free", "n_samples", "expected"),
    [
        (1_000, 100_000, 10_000, 64),  # 80 fit in 80%: the largest power of two is 64
        (1_000, 200_000, 10_000, 128),  # 160 fit
        (1_000, 200_000, 100, 100),  # capped by the samples
        (1_000, 1e12, 500, 500),  # everything fits: one batch of all the samples
        (1_000, 1e12, 512, 512),
        (1e9, 1e9, 100, 1),  # not even one fits: 1 (the OOM fallback has the last word)
        (0.0, 1e9, 300, 300),  # nothing measured: all samples
        (3 * 2**20, 40 * 2**30, 100_000, 8192),  # 3 MiB per sample, 40 GiB free: 10922 fit
    ],
)
def test_choose_batch_size(per_sample: float, free: float, n_samples: int, expected: int) -> None:
    assert choose_batch_size(per_sample, free, n_samples) == expected


def test_a_smaller_memory_fraction_gives_a_smaller_batch() -> None:
    assert choose_batch_size(1_000, 100_000, 10_000, fraction=0.5) == 32


class FakeCudaMemory:
    """``torch.cuda``'s memory counters for a device whose loss gradients take ``per_sample``
    bytes per sample on top of ``base`` (so the probe's arithmetic runs without a GPU)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, per_sample: int, base: int = 10_000) -> None:
        self.per_sample, self.base, self.batches = per_sample, base, []
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.base)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", self.peak)

    def peak(self, device: Any = None) -> int:
        return self.base + self.per_sample * self.batches[-1]


@pytest.mark.parametrize(
    ("dataset", "settings", "model"),
    [
        ("phantom2d", {"n_samples": 60, "image_size": 16}, "smallcnn"),
        ("phantom3d", {"image_size": 16, "n_train": 2, "n_val": 1, "n_test": 2}, "unetr-tiny"),
    ],
)
def test_the_memory_probe_measures_one_loss_gradient_per_model(
    dataset: str, settings: dict[str, Any], model: str, host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's plumbing on the CPU: every model (undefended, untrained, with the run's
    precision) takes one loss gradient of labels of the task's form; the arithmetic is faked."""
    import medbench.engine.batching as batching

    memory = FakeCudaMemory(monkeypatch, per_sample=3_000)
    original = batching.probe_labels

    def labels(estimator: Any, x: torch.Tensor, task: str, multilabel: bool) -> torch.Tensor:
        memory.batches.append(len(x))
        return original(estimator, x, task, multilabel)

    monkeypatch.setattr(batching, "probe_labels", labels)
    monkeypatch.setattr(batching, "free_device_bytes", lambda device: 1_000_000.0)
    spec = spec_from_mapping(
        {
            "dataset": dataset,
            "models": [model],
            "attacks": ["fgsm"],
            "precision": "bf16",
            "channels_last": True,
            "eval_batch_size": "auto",
            "settings": {"dataset": {dataset: settings}, "model": {"unetr-tiny": {"roi": 16}}},
        },
        "test",
    )
    plan = plan_matrix(spec, host, CPU)
    runner = MatrixRunner(plan, host, None, QuietProgress(), ModelCache(enabled=False))  # type: ignore[arg-type]
    state = torch.random.get_rng_state()
    choice = batching.probe_batch_size(plan, runner._evaluator)
    assert torch.equal(torch.random.get_rng_state(), state), "building the probe's models draws no numbers"
    assert memory.batches == [min(8, plan.n_eval)]
    assert choice.per_sample_bytes == 3_000 and choice.free_bytes == 1_000_000
    assert choice.batch_size == min(256, plan.n_eval)  # 800 kB / 3 kB = 266 fit
    assert "MiB per sample" in choice.describe()


def test_split_batches_gives_the_batches_of_eval_batches(
    trained: tuple[DefendedModel, DatasetBundle],
) -> None:
    bundle = trained[1]
    whole = eval_batches(bundle, 50, 50, CPU)
    for size in (1, 7, 16, 50, 64):
        split = split_batches(whole, size)
        direct = eval_batches(bundle, 50, size, CPU)
        assert [len(x) for x, _ in split] == [len(x) for x, _ in direct]
        assert all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(split, direct, strict=True)
        )
        assert split[0][0].data_ptr() == whole[0][0].data_ptr(), "views, not copies"


# --------------------------------------------------------------------------- GPU


def _triton() -> bool:
    return importlib.util.find_spec("triton") is not None


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("acceleration", "tolerance"),
    [
        (Acceleration(precision="bf16"), BF16_TOLERANCE),
        (Acceleration(channels_last=True), 1 / N_EVAL),
        (Acceleration(cudnn_benchmark=True), 1 / N_EVAL),
        pytest.param(
            Acceleration(precision="bf16", channels_last=True, compile=True),
            BF16_TOLERANCE,
            marks=pytest.mark.skipif(not _triton(), reason="torch.compile on CUDA needs triton"),
        ),
        pytest.param(
            Acceleration(compile=True),
            1 / N_EVAL,
            marks=pytest.mark.skipif(not _triton(), reason="torch.compile on CUDA needs triton"),
        ),
    ],
    ids=["bf16", "channels-last", "cudnn-benchmark", "bf16-channels-last-compile", "compile"],
)
def test_options_on_the_gpu_keep_robust_accuracy(
    host: PluginHost,
    trained: tuple[DefendedModel, DatasetBundle],
    acceleration: Acceleration,
    tolerance: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU, fp32 itself is not bit-identical between kernels (cuDNN picks by shape and,
    with autotuning, by timing): layout options are allowed one sample of difference."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", acceleration.cudnn_benchmark)
    reference = accuracies(host, trained, None, cuda)
    torch._dynamo.reset()
    try:
        _assert_close(reference, accuracies(host, trained, acceleration, cuda), tolerance)
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
def test_auto_batch_size_on_the_gpu_probes_memory_and_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        *TINY,
        "--device",
        "cuda",
        "--eval-batch-size",
        "auto",
        "--precision",
        "bf16",
        "--cudnn-benchmark",
        "--tracking-uri",
        uri,
    ]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    assert "MiB per sample" in " ".join(err.split())
    document = json.loads(out)
    assert all(cell["status"] == "FINISHED" for cell in document["cells"])
    params = MlflowClient(tracking_uri=uri).get_run(document["cells"][0]["run_id"]).data.params
    assert params["cudnn_benchmark"] == "True"
    assert 1 <= int(params["eval_batch_size"]) <= 16  # capped by the 16 evaluation samples
