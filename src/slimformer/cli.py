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

from pydantic import BaseModel, ValidationError

from slimformer.config import DATA_ENV
from slimformer.errors import ConfigError, SlimformerError
from slimformer.stages.benchmark import BenchmarkConfig
from slimformer.stages.evaluate import EvaluateConfig
from slimformer.stages.export import ExportConfig
from slimformer.stages.finetune import FinetuneConfig

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
        from slimformer import api

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
        from slimformer import api

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
        p = sub.add_parser("compress", help="run a recipe: ordered stages into one run folder (resumes)")
        p.add_argument("recipe", help="YAML recipe")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1 stages.0.finetune.epochs=2")
        p.add_argument("--run-dir", help="run folder (default: runs/<recipe name>)")
        rerun = p.add_mutually_exclusive_group()
        rerun.add_argument("--restart", action="store_true", help="rerun every stage instead of resuming")
        rerun.add_argument("--rerun-from", metavar="STAGE", help="rerun this stage (name or index) and all later ones")
        pick = p.add_argument_group("length budget (recipes with a 'search' stage; default: --max-loss 1.0)")
        budget = pick.add_mutually_exclusive_group()
        budget.add_argument("--max-loss", type=float, help="fastest configuration within this loss, in metric points")
        budget.add_argument("--budget-ms", type=float, help="most accurate configuration within this int8 latency (ms)")
        budget.add_argument("--max-flops", type=float, help="most accurate configuration within this many FLOPs")
        _add_common(p)
        p.set_defaults(command=Compress.run)

    @staticmethod
    def run(args: argparse.Namespace) -> None:
        from slimformer import api

        budget = {k: getattr(args, k) for k in ("max_loss", "budget_ms", "max_flops") if getattr(args, k) is not None}
        ctx = api.compress(
            args.recipe,
            overrides=args.overrides,
            run_dir=args.run_dir,
            data_root=args.data_root,
            restart=args.restart,
            rerun_from=args.rerun_from,
            budget=budget or None,
        )
        print(f"run folder: {ctx.run_dir}")
        report = ctx.latest("report_md")
        if report:
            print(Path(report).read_text(encoding="utf-8"))


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
        from slimformer import api

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
        from slimformer import api

        res = api.benchmark(
            args.target, config_from_args(BenchmarkConfig, args), data=args.data, data_root=args.data_root
        )
        print(Path(res["report_md"]).read_text(encoding="utf-8"))


SUBCOMMANDS = (Finetune, Evaluate, Compress, Export, Benchmark)


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
    from slimformer import __version__

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
