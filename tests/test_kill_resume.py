"""Interruptions: ``kill -9`` at a point of a run, then the same command, until it completes; the metrics then equal
those of an uninterrupted run with the same seed, bit for bit (trained weights included), and no temporary or
partial folder is left.

The kills are real: a subprocess runs ``slimformer compress`` on the tiny recipe of ``tests/kill_resume_helpers.py``
with ``SLIMFORMER_KILL_AT=<point>`` and sends itself SIGKILL there (:mod:`slimformer._faults`). One folder is killed
successively at several points (each rerun resumes what the previous kill interrupted and dies at the next point),
then completes. The default run kills at 5 points; the other points run with ``-m slow``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kill_resume_helpers import KILL_POINTS, KILLED, leftovers, metrics_of, run_compress, stages_done

pytest.importorskip("onnxruntime")

#: Killed in this order in one run folder by the default test (training, search, quantization, report).
DEFAULT_POINTS = [
    "finetune:after-checkpoint",
    "length:after-checkpoint",
    "search:after-store#3",
    "quantize:before-rename",
    "report:after-json",
]
SLOW_POINTS = [p for p, _ in KILL_POINTS if p not in DEFAULT_POINTS]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kill_resume_helpers import build_recipe

    return build_recipe(tmp_path_factory.mktemp("kill-assets"))


@pytest.fixture(scope="module")
def uninterrupted(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("kill-base") / "run"
    code = run_compress(recipe, run)
    assert code == 0, (run.parent / "run.log").read_text(encoding="utf-8")[-3000:]
    return metrics_of(run)


def _kill_then_finish(recipe: Path, run: Path, points: list[str]) -> None:
    log = run.parent / f"{run.name}.log"
    for point in points:
        code = run_compress(recipe, run, kill_at=point)
        assert code == KILLED, f"{point}: expected the run to be killed there, exit {code}\n" + log.read_text()[-3000:]
    code = run_compress(recipe, run)
    assert code == 0, log.read_text(encoding="utf-8")[-3000:]


def _check(run: Path, expected: dict[str, Any]) -> None:
    assert stages_done(run)
    assert leftovers(run) == []
    got = metrics_of(run)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == expected[key], key


def test_killed_at_each_point_then_rerun_completes_with_the_same_metrics(
    recipe: Path, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    _kill_then_finish(recipe, run, DEFAULT_POINTS)
    _check(run, uninterrupted)
    assert (run / "report.md").is_file() and (run / "pareto_flops.png").is_file()


@pytest.mark.slow
def test_killed_at_the_other_points(recipe: Path, uninterrupted: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    _kill_then_finish(recipe, run, SLOW_POINTS)
    _check(run, uninterrupted)


def test_the_uninterrupted_metrics_hold_what_a_resume_must_reproduce(uninterrupted: dict[str, Any]) -> None:
    """The comparison is not vacuous: accuracies of every stage, the search pick, int8 rows and trained weights."""
    assert uninterrupted["finetune"]["metrics"]["accuracy"] is not None
    assert uninterrupted["front.json"]["selected"]["length_config"]
    assert any("int8" in row["name"] for row in uninterrupted["report.rows"])
    assert {"finetune", "distill", "length"} <= {k.split("/")[0] for k in uninterrupted if k.endswith("sha256")}


def test_kill_point_without_the_variable_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from slimformer._faults import KILL_ENV, kill_point

    monkeypatch.delenv(KILL_ENV, raising=False)
    kill_point("report:after-json")
    monkeypatch.setenv(KILL_ENV, "another:point")
    kill_point("report:after-json")  # still alive
