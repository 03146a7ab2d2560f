"""``medbench leaderboard``: entries from a real tiny run, every format, ranking, schema, HTML in Chromium."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from medbench.cli import main
from medbench.leaderboard.entries import build_entries, curve_area
from medbench.leaderboard.records import CellRecord
from medbench.leaderboard.render import flags_text, markdown
from medbench.leaderboard.schema import DEFAULT_PATH, schema_text

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
name: board
dataset: phantom2d
models: [smallcnn]
defenses: [none, at-fgsm]
attacks: [fgsm, pgd]
budgets: {eps: [2/255, 8/255]}
n_eval: 48
seed: 0
training: {epochs: 4, batch_size: 32, lr: 0.01}
settings:
  dataset:
    phantom2d: {image_size: 16, n_samples: 400}
  attack:
    pgd: {max_iter: 5}
"""


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store filled by a real tiny matrix (2 defenses × 2 attacks × 2 budgets)."""
    directory = tmp_path_factory.mktemp("board")
    spec = directory / "spec.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDBENCH_CACHE_DIR", str(directory / "cache"))
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "--spec", str(spec), "--tracking-uri", uri])
    assert exit_info.value.code in (0, None)
    return uri


def _samples(client: MlflowClient, run_id: str) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as directory:
        path = client.download_artifacts(run_id, "per_sample.npz", directory)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out (Wilson 1927), as an independent reference."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _entries(uri: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, err = _cli(
        ["leaderboard", "--suite", "board", "--tracking-uri", uri, "--format", "json"], capsys
    )
    assert code == 0, err
    return list(json.loads(out))


def test_json_entries_follow_the_schema_and_the_mlflow_metrics(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = _entries(store, capsys)
    schema = json.loads((ROOT / DEFAULT_PATH).read_text())
    for entry in entries:
        jsonschema.validate(entry, schema)
    assert [e["defense"] for e in entries] and {e["defense"] for e in entries} == {"none", "at-fgsm"}
    assert [e["rank"] for e in entries] == [1, 2]
    order = [(e["at_chance"], -e["worst_case"]["value"]) for e in entries]
    assert order == sorted(order), "ranked by worst-case robust accuracy, rows at chance last"

    client = MlflowClient(tracking_uri=store)
    for entry in entries:
        assert (
            entry["suite"] == "board" and entry["metric"] == "accuracy" and entry["task"] == "classification"
        )
        assert entry["headline_budgets"] == {"fgsm": 8 / 255, "pgd": 8 / 255}
        assert len(entry["results"]) == 4 and len(entry["run_ids"]["cells"]) == 4
        robust = {}
        for result in entry["results"]:
            run = client.get_run(result["run_id"])
            assert run.data.params["defense"] == entry["defense"]
            assert result["robust"] == pytest.approx(run.data.metrics["robust_accuracy"])
            assert isinstance(result["metrics"]["l2_mean"], float), "metrics are numbers"
            robust[(result["attack"], round(result["budget"] * 255))] = result["robust"]
        expected_attack = min(("fgsm", "pgd"), key=lambda a: robust[(a, 8)])
        # the worst case is per sample (robust only if robust to every attack), from the cells'
        # per_sample.npz, never above the lowest per-attack value
        at_headline = [r["run_id"] for r in entry["results"] if round(r["budget"] * 255) == 8]
        robust_to_all = np.logical_and.reduce([_samples(client, run)["robust"] for run in at_headline])
        expected = {"value": pytest.approx(robust_to_all.mean()), "attack": expected_attack,
                    "budget": 8 / 255, "per_sample": True}  # fmt: skip
        assert entry["worst_case"] == expected
        assert entry["worst_case"]["value"] <= robust[(expected_attack, 8)]
        low, high = entry["intervals"]["worst_case"]
        assert (low, high) == pytest.approx(_wilson(int(robust_to_all.sum()), len(robust_to_all)))
        low, high = entry["intervals"]["clean_accuracy"]
        assert low <= entry["clean"]["clean_accuracy"] <= high
        clean = entry["clean"]["clean_accuracy"]
        for attack in ("fgsm", "pgd"):
            trapezoids = (clean + robust[(attack, 2)]) * 2 / 2 + (
                robust[(attack, 2)] + robust[(attack, 8)]
            ) * 6 / 2
            assert entry["curve_areas"][attack] == pytest.approx(trapezoids / 8)
        assert entry["curve_area"] == min(entry["curve_areas"].values())
        assert entry["runtime_seconds"] > 0 and entry["accelerator"] == "cpu"
        assert entry["versions"]["medbench"] and entry["n_eval"] == 48
        assert isinstance(entry["needs_adaptive_evaluation"], bool)


def test_markdown_csv_and_table_formats(
    store: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    entries = _entries(store, capsys)
    code, out, _ = _cli(
        ["leaderboard", "--suite", "board", "--tracking-uri", store, "--format", "markdown"], capsys
    )
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0].startswith(
        "| rank | model | defense | clean accuracy | clean auc | fgsm @8/255 | pgd @8/255"
    )
    assert len(lines) == 2 + len(entries)
    assert lines[2].split("|")[3].strip() == entries[0]["defense"]

    target = tmp_path / "board.csv"
    code, _, err = _cli(
        [
            "leaderboard",
            "--suite",
            "board",
            "--tracking-uri",
            store,
            "--format",
            "csv",
            "--output",
            str(target),
        ],
        capsys,
    )
    assert code == 0 and f"wrote {target}" in err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["defense"] for r in rows] == [e["defense"] for e in entries]
    assert float(rows[0]["worst-case accuracy"]) == pytest.approx(entries[0]["worst_case"]["value"])

    code, out, _ = _cli(["leaderboard", "--suite", "board", "--tracking-uri", store], capsys)
    assert code == 0 and "medbench leaderboard: board on phantom2d" in out
    assert out.index(entries[0]["defense"]) < out.index(entries[1]["defense"] + " ")


def test_html_is_self_contained_and_opens_in_chromium(
    store: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "board.html"
    code, _, err = _cli(
        [
            "leaderboard",
            "--suite",
            "board",
            "--tracking-uri",
            store,
            "--format",
            "html",
            "--output",
            str(page),
        ],
        capsys,
    )
    assert code == 0, err
    text = page.read_text()
    assert "<table class=board>" in text and "Robustness curves" in text
    assert text.count("data:image/png;base64,") == 1 + 8, "the curves and the 8 cells' example grids"
    assert "http://" not in text and "https://" not in text and 'src="/' not in text, "self-contained"
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if chromium is None:
        pytest.skip("headless Chromium not found: install Debian's chromium package to open the page")
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert '<table class="board">' in result.stdout and "smallcnn" in result.stdout
    console_errors = [line for line in result.stderr.splitlines() if "Uncaught" in line or "CONSOLE" in line]
    assert not console_errors, console_errors


def test_unknown_experiment_is_a_usage_error(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["leaderboard", "--suite", "bord", "--tracking-uri", store], capsys)
    assert code == 2 and "did you mean 'board'" in err and len(err.strip().splitlines()) == 1


def test_ranking_by_another_metric(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    board = ["leaderboard", "--suite", "board", "--tracking-uri", store]
    code, out, err = _cli([*board, "--format", "json", "--metric", "auc"], capsys)
    assert code == 0, err
    entries = json.loads(out)
    assert {entry["metric"] for entry in entries} == {"auc"}
    order = [(e["at_chance"], -e["worst_case"]["value"]) for e in entries]
    assert order == sorted(order) and [e["rank"] for e in entries] == [1, 2]
    client = MlflowClient(tracking_uri=store)
    for entry in entries:
        headline = {r["attack"]: r for r in entry["results"] if r["budget"] == pytest.approx(8 / 255)}
        # per sample: each sample's least favourable logit margin over the attacks, ranked by
        # scikit-learn's AUC
        samples = [_samples(client, r["run_id"]) for r in headline.values()]
        margins = np.stack([s["adv_logits"][:, 1] - s["adv_logits"][:, 0] for s in samples])
        labels = samples[0]["label"]
        worst_margin = np.where(labels == 1, margins.min(axis=0), margins.max(axis=0))
        assert entry["worst_case"]["per_sample"] is True
        assert entry["worst_case"]["value"] == pytest.approx(roc_auc_score(labels, worst_margin))
        assert entry["worst_case"]["value"] <= min(entry["robust_at_headline"].values()) + 1e-12
        assert entry["robust_at_headline"]["pgd"] == headline["pgd"]["metrics"]["robust_auc"]
    code, out, _ = _cli([*board, "--format", "markdown", "--metric", "auc"], capsys)
    assert code == 0 and "| clean auc | clean accuracy |" in out
    for metric, message in (("dice", "no cell of this board logged robust_dice"), ("acc", "did you mean")):
        code, _, err = _cli([*board, "--metric", metric], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_suite_given_as_a_yaml_path(store: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "my-suite.yaml"
    spec.write_text(SPEC)  # named "board" inside, as `medbench run --suite PATH` would log it
    code, out, err = _cli(
        ["leaderboard", "--suite", str(spec), "--tracking-uri", store, "--format", "json"], capsys
    )
    assert code == 0, err
    assert json.loads(out) == _entries(store, capsys)
    ranked = tmp_path / "ranked.yaml"
    ranked.write_text(SPEC + "rank_by: auc\n")  # the suite names its ranking metric
    code, out, err = _cli(
        ["leaderboard", "--suite", str(ranked), "--tracking-uri", store, "--format", "json"], capsys
    )
    assert code == 0, err
    assert {entry["metric"] for entry in json.loads(out)} == {"auc"}
    code, out, _ = _cli(
        [
            "leaderboard",
            "--suite",
            str(ranked),
            "--tracking-uri",
            store,
            "--format",
            "json",
            "--metric",
            "accuracy",
        ],
        capsys,
    )
    assert {entry["metric"] for entry in json.loads(out)} == {"accuracy"}, "--metric wins over rank_by"
    missing = str(tmp_path / "none.yaml")
    code, _, err = _cli(["leaderboard", "--suite", missing, "--tracking-uri", store], capsys)
    assert code == 2 and "unknown suite" in err and len(err.strip().splitlines()) == 1


def test_the_checked_in_schema_is_current() -> None:
    assert (ROOT / DEFAULT_PATH).read_text() == schema_text(), (
        "regenerate it: python -m medbench.leaderboard.schema"
    )


def test_published_entries_validate() -> None:
    schema = json.loads((ROOT / DEFAULT_PATH).read_text())
    published = sorted((ROOT / "leaderboards" / "entries").glob("*.json"))
    assert published, "leaderboards/entries holds the built-in suites' entries"
    for path in published:
        entries = json.loads(path.read_text())
        assert entries, path
        for entry in entries:
            jsonschema.validate(entry, schema)
        assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1)), path


def _record(defense: str, attack: str, budget: float, dice: float, hd95: float, **extra: Any) -> CellRecord:
    return CellRecord(
        run_id=f"{defense}-{attack}-{budget}", parent_run_id="p", model="unetr-tiny", defense=defense,
        attack=attack, budget_name="q_max" if attack == "vafa" else "eps", budget=budget,
        threat_model="frequency" if attack == "vafa" else "linf", threat="direct", status="FINISHED",
        metrics={"clean_dice": 0.9, "robust_dice": dice, "clean_hd95": 3.0, "robust_hd95": hd95,
                 "seconds": 1.0},
        dataset="phantom3d", dataset_fingerprint="f", seed=0, n_eval=8, start_time=0, task="segmentation",
        **extra,
    )  # fmt: skip


def test_segmentation_entries_rank_by_worst_case_dice() -> None:
    cells = [
        _record("none", "pgd", 4 / 255, 0.8, 5.0),
        _record("none", "pgd", 8 / 255, 0.5, 9.0),
        _record("none", "vafa", 30, 0.85, 4.0),
        _record("vaft", "pgd", 4 / 255, 0.85, 4.0),
        _record("vaft", "pgd", 8 / 255, 0.75, 6.0),
        _record("vaft", "vafa", 30, 0.7, 8.0),
    ]
    entries = build_entries(cells, [], "vafa-3d", "vafa-3d")
    assert [(e.defense, e.rank) for e in entries] == [("vaft", 1), ("none", 2)]
    vaft = entries[0]
    assert vaft.metric == "dice" and vaft.worst_case.attack == "vafa" and vaft.worst_case.value == 0.7
    assert vaft.curve_areas["vafa"] == pytest.approx((0.9 + 0.7) / 2)
    assert vaft.curve_areas["pgd"] == pytest.approx(((0.9 + 0.85) * 4 / 2 + (0.85 + 0.75) * 4 / 2) / 8)


def _classification_record(defense: str, attack: str, clean: float, robust: float, auc: float) -> CellRecord:
    return CellRecord(
        run_id=f"{defense}-{attack}", parent_run_id="p", model="resnet18", defense=defense, attack=attack,
        budget_name="eps", budget=8 / 255, threat_model="linf", threat="direct", status="FINISHED",
        metrics={"clean_accuracy": clean, "robust_accuracy": robust, "clean_auc": auc, "robust_auc": auc,
                 "sanity_chance_accuracy": 0.5, "seconds": 1.0},
        dataset="phantom2d", dataset_fingerprint="f", seed=0, n_eval=256, start_time=0,
    )  # fmt: skip


def test_a_model_at_chance_ranks_last_whatever_its_robust_accuracy() -> None:
    """A training that collapsed to one class keeps its accuracy (the class prior) under every
    attack; ranked by robust accuracy alone it would top the board."""
    cells = [
        _classification_record("none", "fgsm", 0.94, 0.33, 0.98),
        _classification_record("none", "bim", 0.94, 0.26, 0.98),
        _classification_record("collapsed", "fgsm", 0.539, 0.539, 0.438),
        _classification_record("collapsed", "bim", 0.539, 0.539, 0.438),
        _classification_record("weak", "fgsm", 0.9, 0.0, 0.95),
        _classification_record("weak", "bim", 0.9, 0.0, 0.95),
    ]
    entries = build_entries(cells, [], "denoising-cnn", "denoising-cnn")
    assert [(e.defense, e.rank, e.at_chance) for e in entries] == [
        ("none", 1, False),
        ("weak", 2, False),
        ("collapsed", 3, True),
    ]
    collapsed = entries[-1]
    assert not collapsed.needs_adaptive_evaluation
    assert [f.check for f in collapsed.sanity] == ["clean-at-chance"]
    assert flags_text(collapsed) == "at chance: clean-at-chance"
    board = markdown(entries, "denoising-cnn")
    assert "| 3 | resnet18 | collapsed |" in board and "at chance: clean-at-chance |" in board
    for entry in entries:
        jsonschema.validate(entry.model_dump(mode="json"), json.loads(schema_text()))


def test_curve_area_is_the_mean_over_the_budget_range() -> None:
    assert curve_area([(0.0, 1.0), (1.0, 0.0)]) == pytest.approx(0.5)
    assert curve_area([(0.0, 0.8), (2.0, 0.8), (8.0, 0.8)]) == pytest.approx(0.8)
    assert curve_area([(0.0, 0.8), (4.0, math.nan), (8.0, 0.4)]) == pytest.approx(0.6)
    assert math.isnan(curve_area([(0.0, 0.8)]))
