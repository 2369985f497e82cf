"""benchmarks/update_readme.py: results blocks in README.md and docs/results.md, --check, the headline table.

Runs on a synthetic repository in tmp_path (two tiny results files, two tiny markdown files); nothing is measured.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import update_readme  # noqa: E402

MACHINE = {"cpu": "Test CPU", "threads": 1, "torch": "9.9", "onnxruntime": "8.8"}


def _row(name: str, runtime: str, metric: float, throughput: float | None, size: float, **extra) -> dict:
    return {
        "name": name,
        "runtime": runtime,
        "metric_value": metric,
        "latency_ms_bs1": None if throughput is None else 1000 / throughput,
        "throughput_bs32": throughput,
        "size_mb": size,
        "seq_len": 16,
        "notes": "",
        **extra,
    }


TINY = {
    "benchmark": "tiny",
    "command": "python benchmarks/tiny.py",
    "machine": MACHINE,
    "task": "sst2",
    "metric": "accuracy",
    "rows": [
        _row("teacher fp32", "pytorch-fp32", 0.9, 100.0, 90.0),
        _row("student int8, length config (4, 2)", "onnxruntime-int8", 0.875, 400.0, 20.0, length_config=[4, 2]),
    ],
}
SEEDS = {
    "benchmark": "seeds",
    "command": "python benchmarks/seeds.py",
    "machine": MACHINE,
    "task": "sst2",
    "metric": "accuracy",
    "columns": [["name", "row"], ["seed", "seed"], ["metric_value", "acc"]],
    "rows": [
        _row("teacher fp32", "pytorch-fp32", 0.9, None, 90.0, task="sst2", seed=42),
        _row("ternary A", "pytorch-fake-quant", 0.80, None, 50.0, task="sst2", seed=42),
        _row("ternary A", "pytorch-fake-quant", 0.82, None, 50.0, task="sst2", seed=43),
        _row("ternary B", "pytorch-fake-quant", 0.86, None, 50.0, task="sst2", seed=42),
        _row("ternary B", "pytorch-fake-quant", 0.84, None, 50.0, task="sst2", seed=43),
        _row("ternary B", "pytorch-fake-quant", 0.99, None, 50.0, task="cola", seed=42),  # another task: not counted
    ],
}

README = """# demo

Intro text that must stay.

<!-- results:headline -->
stale headline
<!-- /results:headline -->

## Usage

More text, `<!-- results:` in prose.
"""
RESULTS = """# Results

Before.

## Tiny run: 4 + 2 (`recipes/tiny.yaml`)

Prose about tiny.

<!-- results:tiny -->
| old | table |
<!-- /results:tiny -->

## Seeds

```
# not a heading
```

<!-- results:seeds -->
<!-- /results:seeds -->

After.
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "tiny.json").write_text(json.dumps(TINY), encoding="utf-8")
    (tmp_path / "benchmarks" / "results" / "seeds.json").write_text(json.dumps(SEEDS), encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    (tmp_path / "docs" / "results.md").write_text(RESULTS, encoding="utf-8")
    return tmp_path


@pytest.fixture
def headline(monkeypatch):
    monkeypatch.setattr(
        update_readme,
        "HEADLINE",
        (
            ("tiny", "teacher fp32", "Teacher"),
            ("tiny", "pick", "Pick"),
            ("seeds", "best:sst2", "Best ternary"),
            ("tiny", "no such row", "Absent"),
            ("missing-file", "teacher fp32", "No file"),
        ),
    )


def _outside(text: str) -> str:
    """``text`` with the inside of every results block emptied (the markers stay)."""
    return re.sub(r"(<!-- results:(\S+) -->\n).*?(<!-- /results:\2 -->)", r"\1\3", text, flags=re.S)


def test_blocks_in_both_files_are_filled_and_the_rest_is_untouched(repo: Path, headline):
    changed = update_readme.update(repo)
    assert changed == ["README.md", "docs/results.md"]
    readme = (repo / "README.md").read_text(encoding="utf-8")
    results = (repo / "docs" / "results.md").read_text(encoding="utf-8")

    assert "stale headline" not in readme and "| old | table |" not in results
    tiny = results[results.index("<!-- results:tiny -->") : results.index("<!-- /results:tiny -->")]
    assert "| student int8, length config (4, 2) | onnxruntime-int8 | 0.8750 |" in tiny
    assert "4.00x" in tiny  # 400 / 100 seq/s
    assert "Command: `python benchmarks/tiny.py`" in tiny
    assert "Machine: cpu Test CPU, threads 1, torch 9.9, onnxruntime 8.8." in tiny
    seeds = results[results.index("<!-- results:seeds -->") : results.index("<!-- /results:seeds -->")]
    assert "| ternary B | 42 | 0.86 |" in seeds

    assert _outside(readme) == _outside(README) and _outside(results) == _outside(RESULTS)
    assert readme.startswith("# demo\n\nIntro text that must stay.\n\n<!-- results:headline -->\n| result |")
    assert results.endswith("<!-- /results:seeds -->\n\nAfter.\n")


def test_headline_rows_links_and_machine(repo: Path, headline):
    update_readme.update(repo)
    readme = (repo / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("<!-- results:headline -->") : readme.index("<!-- /results:headline -->")]
    rows = [line for line in block.splitlines() if line.startswith("| [")]
    tiny = "docs/results.md#tiny-run-4--2-recipestinyyaml"
    assert rows == [
        f"| [Teacher]({tiny}) | SST-2 | accuracy 0.9000 | 0.9000 | 1.00x | 90.0 |",
        f"| [Pick]({tiny}) | SST-2 | accuracy 0.8750 | 0.9000 | 4.00x | 20.0 |",
        "| [Best ternary](docs/results.md#seeds) | SST-2 | accuracy 0.8500 (mean of 2 seeds) | 0.9000 | – | 50.0 |",
    ]  # the absent row and the missing file are left out, not invented
    assert "Machine: cpu Test CPU, threads 1, torch 9.9, onnxruntime 8.8." in block
    assert "[docs/results.md](docs/results.md)" in block


def test_second_run_changes_nothing_and_check_writes_nothing(repo: Path, headline):
    assert update_readme.update(repo, check=True) == ["README.md", "docs/results.md"]
    assert (repo / "README.md").read_text(encoding="utf-8") == README  # --check only reports
    assert (repo / "docs" / "results.md").read_text(encoding="utf-8") == RESULTS
    update_readme.update(repo)
    filled = (repo / "docs" / "results.md").read_text(encoding="utf-8")
    assert update_readme.update(repo) == []
    assert update_readme.update(repo, check=True) == []
    assert (repo / "docs" / "results.md").read_text(encoding="utf-8") == filled


def test_main_check_exit_status(repo: Path, headline, monkeypatch):
    monkeypatch.setattr(update_readme, "ROOT", repo)
    assert update_readme.main(["--check"]) == 1
    assert update_readme.main([]) == 0
    assert update_readme.main(["--check"]) == 0


def test_a_block_in_both_files_is_filled_in_both(repo: Path, headline):
    (repo / "README.md").write_text(README + "\n<!-- results:tiny -->\n<!-- /results:tiny -->\n", encoding="utf-8")
    update_readme.update(repo)
    readme = (repo / "README.md").read_text(encoding="utf-8")
    results = (repo / "docs" / "results.md").read_text(encoding="utf-8")
    assert readme.count("Command: `python benchmarks/tiny.py`") == 1
    assert results.count("Command: `python benchmarks/tiny.py`") == 1


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("QuaLA on SST-2: distillation + LengthDrop + length search + int8 (short budgets)",
         "quala-on-sst-2-distillation--lengthdrop--length-search--int8-short-budgets"),
        ("SQuAD without LengthDrop, 3.5x more distillation (`recipes/quala-squad-truncation.yaml`)",
         "squad-without-lengthdrop-35x-more-distillation-recipesquala-squad-truncationyaml"),
        ("A [link](x.md) here", "a-link-here"),
    ],
)  # fmt: skip
def test_github_anchor(heading: str, anchor: str):
    assert update_readme.github_anchor(heading) == anchor


def test_repeated_headings_get_numbered_anchors():
    text = "## Setup\n\n<!-- results:a -->\n\n## Setup\n\n<!-- results:b -->\n"
    assert update_readme.section_anchors(text) == {"a": "setup", "b": "setup-1"}


def test_runs_trained_elsewhere_say_where() -> None:
    """A results file read back here from runs trained on another machine (the lent GPU) states both machines."""
    here = update_readme.render(SEEDS)
    assert "Trained on:" not in here and "Machine: cpu Test CPU" in here
    there = update_readme.render({**SEEDS, "trained_on": "one NVIDIA H200"})
    assert "Trained on: one NVIDIA H200.  " in there.splitlines()
