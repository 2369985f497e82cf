"""Tasks: registry, readers for the official GLUE / SQuAD formats, tokenization and official metrics."""

from slimformer.tasks.glue import Example, compute_glue_metrics, encode_glue, glue_file, read_glue
from slimformer.tasks.metrics import METRICS, accuracy, binary_f1, matthews_corrcoef, pearson, spearman
from slimformer.tasks.registry import TASKS, TaskKind, TaskSpec, get_task, register_task, task_from_dict, task_to_dict
from slimformer.tasks.squad import SQUAD_SPLITS, QAExample, article_split, read_squad, split_squad
from slimformer.tasks.squad_features import prepare_eval_features, prepare_train_features
from slimformer.tasks.squad_metric import (
    exact_match_score,
    f1_score,
    metric_max_over_ground_truths,
    normalize_answer,
    squad_evaluate,
)
from slimformer.tasks.squad_postprocess import postprocess_qa_predictions

__all__ = [
    "TaskKind",
    "TaskSpec",
    "TASKS",
    "get_task",
    "register_task",
    "task_to_dict",
    "task_from_dict",
    "Example",
    "glue_file",
    "read_glue",
    "encode_glue",
    "compute_glue_metrics",
    "METRICS",
    "accuracy",
    "binary_f1",
    "matthews_corrcoef",
    "pearson",
    "spearman",
    "QAExample",
    "read_squad",
    "article_split",
    "SQUAD_SPLITS",
    "split_squad",
    "prepare_train_features",
    "prepare_eval_features",
    "postprocess_qa_predictions",
    "normalize_answer",
    "exact_match_score",
    "f1_score",
    "metric_max_over_ground_truths",
    "squad_evaluate",
]
