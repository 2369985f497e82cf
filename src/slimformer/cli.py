"""``slimformer`` command line: a thin layer that parses arguments into config objects and calls the API.

Subcommands follow a ``create(subparsers)`` / ``run(args)`` contract. Config options are generated from
the pydantic config fields (``--learning-rate`` for ``learning_rate``), so the CLI, the API and recipes
share one definition. User errors print ``error: <one line>`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from slimformer import __version__, api, dist
from slimformer.config import DATA_ENV
from slimformer.errors import ConfigError, SlimformerError
from slimformer.io import atomic_write_text
from slimformer.serving import pipeline
from slimformer.stages.benchmark import BenchmarkConfig
from slimformer.stages.evaluate import EvaluateConfig
from slimformer.stages.export import ExportConfig
from slimformer.stages.finetune import FinetuneConfig
from slimformer.tasks.userdata import DataFiles

__all__ = ["main", "build_parser"]


def _arg_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type``/``choices``/``nargs`` for a pydantic field annotation."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _arg_type(args[0])
    if origin is typing.Literal:
        return str, {"choices": list(typing.get_args(annotation))}
    if origin is list:
        inner, extra = _arg_type(args[0])
        return inner, {"nargs": "+", **extra}
    if annotation is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    return annotation, {}


def add_config_args(parser: argparse.ArgumentParser, config_cls: type[BaseModel], *, skip: Sequence[str] = ()) -> None:
    """Add one ``--option`` per field of ``config_cls`` (default ``None``: the config's default applies)."""
    group = parser.add_argument_group(f"{config_cls.__name__} options")
    for name, field in config_cls.model_fields.items():
        if name in skip:
            continue
        typ, extra = _arg_type(field.annotation)
        kwargs: dict[str, Any] = {"default": None, "help": field.description, **extra}
        if typ is not None:
            kwargs["type"] = typ
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, **kwargs)


def config_from_args(config_cls: type[BaseModel], args: argparse.Namespace, **fixed: Any) -> Any:
    """Build ``config_cls`` from the options the user set (plus ``fixed``); ConfigError names the option."""
    values = {k: getattr(args, k) for k in config_cls.model_fields if getattr(args, k, None) is not None}
    values.update({k: v for k, v in fixed.items() if v is not None})
    try:
        return config_cls(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else config_cls.__name__
        raise ConfigError(f"{key}: {err['msg']} (got {err.get('input')!r})") from None


class Finetune:
    """``slimformer finetune --model minilm-l6 --task sst2 --data <glue_data>/SST-2 --out runs/sst2-base``."""

    @staticmethod
    def create(sub: Any) -> None:
        p = sub.add_parser("finetune", help="fine-tune an encoder on a task (Hugging Face Trainer)")
        p.add_argument("--out", required=True, help="model folder to write")
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an interrupted run")
        p.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a fine-tuned model")
        add_config_args(p, FinetuneConfig)
        _add_common(p)
        p.set_defaults(command=Finetune.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        res = api.finetune(
            config_from_args(FinetuneConfig, args),
            args.out,
            data_root=args.data_root,
            resume=args.resume,
            overwrite=args.overwrite,
        )
        print(f"saved {res.model_dir}  metrics: {_fmt(res.metrics)}")


class Evaluate:
    """``slimformer evaluate runs/sst2-base --task sst2 --data <glue_data>/SST-2`` (a model folder or .onnx)."""

    @staticmethod
    def create(sub: Any) -> None:
        p = sub.add_parser("evaluate", help="official metric of a model folder or ONNX file on a task split")
        p.add_argument("model", help="model folder (PyTorch) or .onnx file (ONNX Runtime)")
        p.add_argument("--task", help="task name (default: the model's slimformer.json)")
        p.add_argument("--data", help="task data (default: the data the model was fine-tuned on)")
        add_config_args(p, EvaluateConfig)
        _add_common(p)
        p.set_defaults(command=Evaluate.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        metrics = api.evaluate(
            args.model,
            task=args.task,
            data=args.data,
            config=config_from_args(EvaluateConfig, args),
            data_root=args.data_root,
        )
        print(_fmt(metrics))


class Compress:
    """``slimformer compress recipes/quickstart-sst2.yaml [key=value ...]``: run a recipe (the main job)."""

    @staticmethod
    def create(sub: Any) -> None:
        p = sub.add_parser(
            "compress",
            help="run a recipe (ordered stages into one run folder; resumes), or compress your model on your data "
            "(--model DIR --train FILE ...: the recipe is written into the run folder, then run)",
        )
        p.add_argument("recipe", nargs="?", help="YAML recipe (omit with --model/--train)")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1 stages.0.finetune.epochs=2")
        p.add_argument("--run-dir", help="run folder (default: runs/<recipe name>)")
        _add_user_data(p)
        rerun = p.add_mutually_exclusive_group()
        rerun.add_argument("--restart", action="store_true", help="rerun every stage instead of resuming")
        rerun.add_argument("--rerun-from", metavar="STAGE", help="rerun this stage (name or index) and all later ones")
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="check every stage against the task, data and earlier stages, print the resolved plan, run nothing",
        )
        pick = p.add_argument_group("length budget (recipes with a 'search' stage; default: --max-loss 1.0)")
        budget = pick.add_mutually_exclusive_group()
        budget.add_argument("--max-loss", type=float, help="fastest configuration within this loss, in metric points")
        budget.add_argument("--budget-ms", type=float, help="most accurate configuration within this int8 latency (ms)")
        budget.add_argument("--max-flops", type=float, help="most accurate configuration within this many FLOPs")
        _add_common(p)
        p.set_defaults(command=Compress.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        budget = {k: getattr(args, k) for k in ("max_loss", "budget_ms", "max_flops") if getattr(args, k) is not None}
        recipe = args.recipe
        if args.train is not None:
            if args.recipe is not None and "=" not in args.recipe:
                raise ConfigError("give either a recipe file or --model/--train, not both")
            if args.recipe is not None:  # argparse put the first override in the recipe slot
                args.overrides = [args.recipe, *args.overrides]
            if args.budget_ms is not None or args.max_flops is not None:
                raise ConfigError(
                    "--model/--train picks by --max-loss (against your teacher); write the recipe with "
                    "`slimformer recipe new` and compress it with --budget-ms / --max-flops instead"
                )
            if args.dry_run:  # the plan of the first variant the one command tries
                raw = api.new_recipe(**_user_data(args), max_loss=args.max_loss if args.max_loss is not None else 1.0)
                _print_plan(api.plan(raw, overrides=args.overrides, run_dir=args.run_dir, data_root=args.data_root))
                return
            ctx = api.compress_user(
                **_user_data(args),
                max_loss=args.max_loss if args.max_loss is not None else 1.0,
                run_dir=args.run_dir,
                data_root=args.data_root,
                overrides=args.overrides,
            )
            _report(ctx)
            return
        if recipe is None:
            raise ConfigError("give a recipe file, or --model DIR --train FILE (your model and data)")
        kwargs = dict(
            overrides=args.overrides,
            run_dir=args.run_dir,
            data_root=args.data_root,
            restart=args.restart,
            rerun_from=args.rerun_from,
            budget=budget or None,
        )
        if args.dry_run:
            _print_plan(api.plan(recipe, **kwargs))
            return
        _report(api.compress(recipe, **kwargs))


class Export:
    """``slimformer export runs/sst2-base --format onnx --int8 dynamic``."""

    @staticmethod
    def create(sub: Any) -> None:
        p = sub.add_parser("export", help="export a model folder to ONNX (fp32, optionally int8) with a parity check")
        p.add_argument("model", help="model folder")
        p.add_argument("--out", help="output folder (default: <model>/onnx)")
        add_config_args(p, ExportConfig)
        _add_common(p)
        p.set_defaults(command=Export.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        res = api.export(args.model, config_from_args(ExportConfig, args), out=args.out)
        print(_fmt(res))


class Benchmark:
    """``slimformer benchmark runs/sst2-int8 --batch-sizes 1 32`` (a run folder or a model folder)."""

    @staticmethod
    def create(sub: Any) -> None:
        p = sub.add_parser("benchmark", help="accuracy, latency, throughput and size of every runtime of a run")
        p.add_argument("target", help="run folder (from compress) or model folder")
        p.add_argument("--data", help="task data (default: the data the model was fine-tuned on)")
        add_config_args(p, BenchmarkConfig)
        _add_common(p)
        p.set_defaults(command=Benchmark.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        res = api.benchmark(
            args.target, config_from_args(BenchmarkConfig, args), data=args.data, data_root=args.data_root
        )
        print(Path(res["report_md"]).read_text(encoding="utf-8"))


def _print_plan(rows: list[dict[str, Any]]) -> None:
    """The checked plan of ``compress --dry-run`` as YAML (nothing ran)."""
    print(yaml.safe_dump({"plan": rows}, sort_keys=False, allow_unicode=True), end="")
    runs = sum(r["action"] == "runs" for r in rows)
    print(f"# checked: {len(rows)} stages, {runs} would run, {len(rows) - runs} done earlier; nothing was run")


def _report(ctx: Any) -> None:
    if not dist.is_main():  # several processes: the main one reports
        return
    print(f"run folder: {ctx.run_dir}")
    report = ctx.latest("report_md")
    if report:
        print(Path(report).read_text(encoding="utf-8"))


def _add_user_data(p: argparse.ArgumentParser) -> None:
    """Options describing the user's model and data (``compress --model ... --train ...``, ``recipe new``)."""
    g = p.add_argument_group("your model and data (instead of a recipe)")
    g.add_argument("--model", help="your fine-tuned Hugging Face folder (task head), or a base encoder (minilm-l6)")
    g.add_argument("--train", help="training file: CSV, TSV, JSON, JSONL, Parquet, or a datasets folder")
    g.add_argument("--eval", help="eval file (default: a seeded, stratified 10%% hold-out of --train)")
    g.add_argument("--test", help="labelled test file, reported on (optional)")
    g.add_argument("--text-column", default="text", help="text column (QA: the question column); default: text")
    g.add_argument("--text-pair-column", help="second text column of a pair task")
    g.add_argument("--label-column", default="label", help="label column; default: label")
    g.add_argument("--kind", choices=["classification", "regression", "qa"], default="classification")
    g.add_argument("--task-name", help="name of the task and the run (default: the training file's folder)")
    g.add_argument("--main-metric", help="metric of --max-loss (default: accuracy / spearman / f1)")


def _user_data(args: argparse.Namespace) -> dict[str, Any]:
    if not args.model:
        raise ConfigError("--train needs --model (your fine-tuned folder, or a base encoder such as minilm-l6)")
    files = DataFiles(
        train=args.train,
        eval=args.eval,
        test=args.test,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        kind=args.kind,
    )
    return {"model": args.model, "files": files, "name": args.task_name, "main_metric": args.main_metric}


class RecipeNew:
    """``slimformer recipe new --model DIR --train FILE ... --out recipe.yaml``: write the recipe, do not run it."""

    @staticmethod
    def create(sub: Any) -> None:
        p = sub.add_parser("recipe", help="write the recipe `compress --model/--train` would run")
        p.add_argument("action", choices=["new"], help="new: write a recipe for your model and data")
        p.add_argument("--out", required=True, help="recipe file to write (refused if it exists)")
        p.add_argument("--max-loss", type=float, default=1.0, help="largest loss against the teacher (points)")
        _add_user_data(p)
        p.set_defaults(command=RecipeNew.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        if args.train is None:
            raise ConfigError("recipe new needs --model and --train")
        if Path(args.out).exists():
            raise ConfigError(f"{args.out}: exists; choose another --out (nothing was written)")
        path = api.write_recipe(api.new_recipe(**_user_data(args), max_loss=args.max_loss), args.out)
        print(f"recipe: {path}")


class Predict:
    """``slimformer predict FOLDER --input texts.jsonl --output preds.jsonl``: raw texts in, predictions out."""

    @staticmethod
    def create(sub: Any) -> None:
        p = sub.add_parser("predict", help="predict raw texts with an export folder (ONNX Runtime) or a model folder")
        p.add_argument("folder", help="export folder (model.int8.onnx / model.onnx) or model folder")
        p.add_argument(
            "--input",
            required=True,
            help='JSONL: one {"text": ...} (+ "text_pair"; QA: "question", "context") or a JSON string per line',
        )
        p.add_argument("--output", required=True, help="JSONL to write, one prediction per input line")
        p.add_argument("--runtime", choices=["int8", "fp32", "pytorch"], help="default: int8 if exported")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--threads", type=int)
        p.set_defaults(command=Predict.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        import json

        src, out = Path(args.input), Path(args.output)
        if not src.is_file():
            raise ConfigError(f"{src}: input file not found")
        if out.resolve() == src.resolve():
            raise ConfigError(f"{out}: the output would overwrite the input")
        items = []
        for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as e:
                raise ConfigError(f"{src}:{n}: not JSON ({e.msg})") from None
        pipe = pipeline(args.folder, runtime=args.runtime, threads=args.threads, batch_size=args.batch_size)
        preds = pipe(items)
        atomic_write_text(out, "".join(json.dumps(p) + "\n" for p in preds))
        print(f"{len(preds)} predictions -> {out}")


SUBCOMMANDS = (Finetune, Evaluate, Compress, Export, Benchmark, RecipeNew, Predict)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help=f"root of relative data paths (default: ${DATA_ENV} or ./data)")


def _fmt(d: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, ``error: <prog>: <message>``, exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        text = " ".join(f"{self.prog}: {message}".split())
        self.exit(2, f"error: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``slimformer`` argument parser with every subcommand."""
    parser = _Parser(prog="slimformer", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"slimformer {__version__}")
    sub = parser.add_subparsers(required=True, metavar="command")
    for cmd in SUBCOMMANDS:
        cmd.create(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``compress`` takes its ``key=value`` overrides before, between or after the options."""
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) is Compress.run and not any(a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the subcommand; user errors -> ``error: ...`` on stderr and exit status 2.

    Usage errors (an unknown option, a value of the wrong type) are one line too. An operating-system error on a
    named file (permission denied, no space left, a file where a folder is expected) is a user error as well:
    ``error: <file>: <reason>``, exit status 2.
    """
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as e:  # --help, --version, usage errors (already printed)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        args.command(args)
    except SlimformerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
