"""Bounded YAML loading: same results as yaml.safe_load on good input, one-line ConfigError on hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slimformer import yamlio
from slimformer.errors import ConfigError
from slimformer.yamlio import load_yaml, load_yaml_file

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

RECIPE = """\
# a recipe-like document
name: quickstart-sst2
task: sst2
model: minilm-l6
data: glue_data/SST-2
seed: 42
lr: 2.0e-5
weight_decay: 0.01
enabled: true
nothing: null
stages:
  - finetune: {epochs: 1, max_train_examples: 8000}
  - evaluate: {}
  - quantize:
      mode: dynamic
      skip: [classifier, "pooler.dense"]
  - benchmark: {batch_sizes: [1, 32]}
notes: |
  two
  lines
"""


def _billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _one_line_error(text: str, source: str = "r.yaml", **limits: int) -> str:
    with pytest.raises(ConfigError) as info:
        load_yaml(text, source, **limits)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{source}: "), msg
    return msg


# -- same results as safe_load -------------------------------------------------------------------------


def test_recipe_like_document_equals_safe_load() -> None:
    data = load_yaml(RECIPE, "r.yaml")
    assert data == yaml.safe_load(RECIPE)
    assert data["stages"][2]["quantize"]["skip"] == ["classifier", "pooler.dense"]
    assert data["lr"] == 2.0e-5 and data["enabled"] is True and data["nothing"] is None


def test_shipped_recipes_equal_safe_load() -> None:
    paths = sorted(RECIPES.glob("*.yaml"))
    assert paths
    for p in paths:
        assert load_yaml_file(p) == yaml.safe_load(p.read_text(encoding="utf-8")), p.name


@pytest.mark.parametrize("value", ["2", "2.5e-5", "[1, 32]", "{mode: dynamic}", "true", "null", "hello", ""])
def test_override_values_equal_safe_load(value: str) -> None:
    assert load_yaml(value, "r.yaml: override 'x'") == yaml.safe_load(value)


def test_moderate_anchors_and_merge_keys_work() -> None:
    text = """\
base: &base {epochs: 1, lr: 1.0e-4}
one: *base
two: *base
three: {<<: *base, epochs: 3}
"""
    data = load_yaml(text, "r.yaml")
    assert data == yaml.safe_load(text)
    assert data["three"] == {"epochs": 3, "lr": 1.0e-4}


# -- expansion bombs -------------------------------------------------------------------------------------


def test_billion_laughs_is_refused_before_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _billion_laughs()
    assert len(text) < 500
    # The refusal must come from composition (counting), not from building (expanding) the data: with
    # construction stubbed out, a loader that let the document through would return None instead of raising.
    # (The stub returns rather than fails: a failure report would repr the node graph, i.e. expand the bomb.)
    monkeypatch.setattr(yamlio._BoundedSafeLoader, "construct_document", lambda self, node: None)
    msg = _one_line_error(text)
    assert "alias" in msg and "max_nodes" in msg


def test_too_many_aliases_refused() -> None:
    text = "x: &a 1\ny: [" + ", ".join(["*a"] * 101) + "]\n"
    msg = _one_line_error(text)
    assert "alias" in msg and "100" in msg and "line 2" in msg
    assert load_yaml(text, "r.yaml", max_aliases=101)["y"] == [1] * 101


def test_alias_counts_its_anchors_nodes() -> None:
    # 11 nodes behind the anchor; 5 aliases to it make 1 + 12 + 1 + 1 + 5 * 11 = 70 nodes in all.
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [*a, *a, *a, *a, *a]\n"
    assert load_yaml(text, "r.yaml", max_nodes=70) == yaml.safe_load(text)
    assert "alias" in _one_line_error(text, max_nodes=69)


def test_too_many_nodes_without_aliases_refused() -> None:
    msg = _one_line_error("[" + ", ".join(["1"] * 200) + "]", max_nodes=100)
    assert "more than 100 nodes" in msg


def test_recursive_alias_refused() -> None:
    assert "recursive" in _one_line_error("a: &a [1, *a]\n")


# -- nesting -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200 + "]" * 200,
        "{a: " * 200 + "1" + "}" * 200,
        "".join(f"{'  ' * i}k:\n" for i in range(200)) + "  " * 200 + "v: 1\n",
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["flow-lists", "flow-mappings", "block-mappings", "lists-100k"],
)
def test_deep_nesting_refused_without_recursion_error(text: str) -> None:
    msg = _one_line_error(text)
    assert "nesting deeper than 64" in msg


def test_depth_at_the_limit_accepted() -> None:
    lists = "[" * 64 + "1" + "]" * 64
    maps = "{a: " * 64 + "1" + "}" * 64
    assert load_yaml(lists, "r.yaml") == yaml.safe_load(lists)
    assert load_yaml(maps, "r.yaml") == yaml.safe_load(maps)
    assert "nesting" in _one_line_error("[" + lists + "]")
    assert "nesting" in _one_line_error("{a: " + maps + "}")


def test_depth_counts_alias_expansion() -> None:
    inner = "a: &a [[[1]]]\n"  # 3 levels under the anchor, itself at depth 1 under the top mapping
    ok = inner + "b: " + "[" * 60 + "*a" + "]" * 60 + "\n"  # 1 + 60 + 3 = 64
    assert load_yaml(ok, "r.yaml") == yaml.safe_load(ok)
    bad = inner + "b: " + "[" * 61 + "*a" + "]" * 61 + "\n"
    assert "aliases are expanded" in _one_line_error(bad)


# -- keys, tags, values --------------------------------------------------------------------------------------


def test_duplicate_key_refused_with_key_and_lines() -> None:
    msg = _one_line_error("name: a\nseed: 1\nstages:\n  - finetune: {epochs: 1, epochs: 2}\n")
    assert "duplicate key 'epochs'" in msg and "line 4" in msg
    msg = _one_line_error("name: a\nseed: 1\nseed: 2\n")
    assert "duplicate key 'seed'" in msg and "line 3" in msg and "first at line 2" in msg


def test_equal_keys_written_differently_are_duplicates() -> None:
    assert "duplicate key" in _one_line_error("1: a\ntrue: b\n")


def test_duplicate_key_inside_merged_mapping_refused() -> None:
    assert "duplicate key 'x'" in _one_line_error("c: {<<: {x: 1, x: 2}, y: 3}\n")


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['echo hi']",
        "x: !!python/object/apply:os.system ['echo hi']",
        "x: !!python/name:os.system",
        "x: !local thing",
    ],
)
def test_application_tags_refused(text: str) -> None:
    with pytest.raises(yaml.YAMLError):  # the reference behaviour
        yaml.safe_load(text)
    assert "is not allowed" in _one_line_error(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("d: 2020-02-30", "bad timestamp"), ("n: " + "1" * 5000, "bad int")],
)
def test_unconvertible_values_are_config_errors(text: str, expected: str) -> None:
    with pytest.raises(ValueError):  # safe_load: a bare ValueError with no file or line
        yaml.safe_load(text)
    msg = _one_line_error(text)
    assert expected in msg and "line 1" in msg


# -- size and syntax -----------------------------------------------------------------------------------------


def test_oversize_text_refused() -> None:
    assert "max_bytes" in _one_line_error("a: " + "x" * 2000, max_bytes=1000)
    assert "max_bytes" in _one_line_error("a: " + "é" * 600, max_bytes=1000)  # 1203 UTF-8 bytes, 603 characters
    assert "max_bytes" in _one_line_error("a: " + "x" * (yamlio.DEFAULT_MAX_BYTES + 1))


@pytest.mark.parametrize(
    "text",
    ["a: [1, 2\nb: 3\n", "a: b: c\n", "a: 1\n  b: 2\n", "a: 1\n---\nb: 2\n", "x: *nowhere\n", "x: \x00\n"],
)
def test_invalid_yaml_is_one_line(text: str) -> None:
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    msg = _one_line_error(text)
    assert msg.startswith("r.yaml: not valid YAML (") and msg.endswith(")")


def test_invalid_yaml_names_the_line() -> None:
    assert "(line 3: mapping values are not allowed here)" in _one_line_error("a: 1\nb: 2\nc: d: e\nf: 4\n")
    assert "(line 4: while parsing a flow sequence at line 3, " in _one_line_error("a: 1\nb: 2\nc: [1, 2\nd: 4\n")


# -- files ---------------------------------------------------------------------------------------------------


def test_load_yaml_file_reads_utf8(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE + "label: négatif\n", encoding="utf-8")
    assert load_yaml_file(p) == yaml.safe_load(RECIPE + "label: négatif\n")


def test_load_yaml_file_missing(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="file not found") as info:
        load_yaml_file(p)
    assert str(info.value) == f"{p}: file not found"


def test_load_yaml_file_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory") as info:
        load_yaml_file(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_load_yaml_file_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_yaml_file(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: ") and "UTF-8" in msg and "0xe9" in msg and "\n" not in msg


def test_load_yaml_file_oversize_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.yaml"
    p.write_text("a: " + "x" * 200 + "\n", encoding="utf-8")
    monkeypatch.setattr(Path, "open", lambda *a, **k: pytest.fail("read an oversize file"))
    with pytest.raises(ConfigError, match="max_bytes") as info:
        load_yaml_file(p, max_bytes=100)
    assert str(info.value).startswith(f"{p}: ")


def test_load_yaml_file_errors_name_the_path(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text("seed: 1\nseed: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"duplicate key 'seed'") as info:
        load_yaml_file(p)
    assert str(info.value).startswith(f"{p}: line 2: ")
    p.write_text(_billion_laughs(), encoding="utf-8")
    with pytest.raises(ConfigError, match="alias") as info:
        load_yaml_file(p)
    assert str(info.value).startswith(f"{p}: ")
    p.write_text("[" * 10 + "]" * 10, encoding="utf-8")
    with pytest.raises(ConfigError, match="nesting deeper than 5"):
        load_yaml_file(p, max_depth=5)
