"""A board is one configuration: cells of other settings are listed as excluded, never averaged in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench.cli import main
from medbench.leaderboard.configuration import one_configuration
from medbench.leaderboard.records import CellRecord

BASE = {"n_eval": "64", "seed": "0", "training.epochs": "5", "attack.max_iter": "10", "model.width": "16"}


def cell(
    attack: str, start: int, fingerprint: str = "fp", defense: str = "none", **params: str
) -> CellRecord:
    return CellRecord(
        run_id=f"{attack}-{start}",
        parent_run_id="p",
        model="smallcnn",
        defense=defense,
        attack=attack,
        budget_name="eps",
        budget=8 / 255,
        threat_model="linf",
        threat="direct",
        status="FINISHED",
        metrics={"robust_accuracy": 0.5},
        dataset="phantom2d",
        dataset_fingerprint=fingerprint,
        seed=0,
        n_eval=64,
        start_time=start,
        params={**BASE, **params},
    )


def test_cells_of_other_settings_are_excluded_with_the_setting_that_differs() -> None:
    cells = [
        cell("fgsm", 1, n_eval="450"),  # the README's --n-eval example before the suite's run
        cell("pgd", 2, **{"training.epochs": "1"}),
        cell("gn", 3, fingerprint="other"),
        cell("pgd", 4, **{"attack.max_iter": "50"}),  # its attack's settings differ from the newest pgd
        cell("fgsm", 5),
        cell("pgd", 6),
        cell("fgsm", 7, defense="at-pgd", **{"model.width": "32"}),
        cell("fgsm", 8, defense="at-pgd"),
    ]
    kept, excluded = one_configuration(cells)
    assert [c.run_id for c in kept] == ["fgsm-5", "pgd-6", "fgsm-8"]
    reasons = {e.run_id: e.reason for e in excluded}
    assert reasons == {
        "fgsm-1": "n_eval 450, not 64",
        "pgd-2": "training.epochs 1, not 5",
        "gn-3": "dataset fingerprint other, not fp",
        "pgd-4": "attack.max_iter 50, not 10",
        "fgsm-7": "model.width 32, not 16",
    }


def test_the_leaderboard_lists_the_cells_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    store = f"sqlite:///{tmp_path / 'm.db'}"
    tiny = [
        "--set",
        "dataset.phantom2d.image_size=16",
        "--epochs",
        "1",
        "--defense",
        "none",
        "--attack",
        "fgsm",
    ]
    tiny += ["--eps", "8/255", "--experiment", "mixed", "--tracking-uri", store]
    for n_eval in ("16", "24"):
        with pytest.raises(SystemExit) as done:
            main(["run", *tiny, "--n-eval", n_eval])
        assert done.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(
            [
                "leaderboard",
                "--experiment",
                "mixed",
                "--suite",
                "mixed",
                "--tracking-uri",
                store,
                "--format",
                "json",
            ]
        )
    captured = capsys.readouterr()
    assert done.value.code == 0
    (entry,) = json.loads(captured.out)
    assert entry["n_eval"] == 24, "the newest run's configuration"
    assert "left out: smallcnn/none/fgsm@8/255: n_eval 16, not 24" in " ".join(captured.err.split())
