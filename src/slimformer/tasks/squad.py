"""SQuAD v1.1 / XQuAD reader and the named article-level splits of SQuAD dev.

File layout (Rajpurkar et al., 2016, https://arxiv.org/abs/1606.05250; XQuAD, Artetxe et al., 2020,
https://arxiv.org/abs/1910.11856, uses the same one)::

    {"version": "1.1", "data": [{"title": str, "paragraphs": [{"context": str, "qas": [
        {"id": str, "question": str, "answers": [{"text": str, "answer_start": int}, ...]}]}]}]}

SQuAD train-v1.1.json is not available to this project, so fine-tuning uses part of dev-v1.1.json and
evaluates on the rest: :data:`SQUAD_SPLITS` names the splits, each disjoint by article (hence by paragraph).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from slimformer.errors import ConfigError, DataError

__all__ = ["QAExample", "read_squad", "article_split", "SQUAD_SPLITS", "split_squad"]

logger = logging.getLogger(__name__)

#: An ``answer_start`` that does not point at the answer text is moved to the nearest occurrence of the
#: text when that occurrence is at most this many characters away; farther away (or absent) is an error.
MAX_ANSWER_SHIFT = 64


@dataclass(frozen=True)
class QAExample:
    """One SQuAD question.

    Attributes:
        id: the question id (unique in the file; XQuAD reuses the SQuAD dev ids).
        title: the article title.
        context: the paragraph text.
        question: the question text.
        answers: ``(text, answer_start)`` pairs; ``answer_start`` is a character offset into ``context``
            with ``context[start:start + len(text)] == text``. May be empty (unlabelled data).
    """

    id: str
    title: str
    context: str
    question: str
    answers: tuple[tuple[str, int], ...]


def _get(obj: Any, key: str, kind: type, where: str, path: Path) -> Any:
    """``obj[key]`` checked to be a ``kind``; ``where`` is the key path of ``obj`` ("" for the root)."""
    full = f"{where}.{key}" if where else key
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where or 'top level'} should be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: missing key {full}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{path}: {full} should be a {kind.__name__}, got {type(value).__name__}")
    return value


def _locate(context: str, text: str, start: int) -> int:
    """``start`` if the answer is there, else the nearest occurrence within MAX_ANSWER_SHIFT, else -1."""
    if context[start : start + len(text)] == text:
        return start
    best = -1
    pos = context.find(text)
    while pos != -1:
        if abs(pos - start) <= MAX_ANSWER_SHIFT and (best == -1 or abs(pos - start) < abs(best - start)):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def read_squad(path: str | os.PathLike[str]) -> list[QAExample]:
    """Read a SQuAD v1.1 (or XQuAD) JSON file.

    Each answer's ``answer_start`` is checked against the context. When the text is not at that offset but
    occurs within :data:`MAX_ANSWER_SHIFT` characters of it, the offset is moved to the nearest occurrence
    and a warning (with the count) is logged; otherwise the file is rejected. (The official dev-v1.1 and all
    XQuAD files need no correction.)

    Args:
        path: the JSON file.

    Returns:
        The questions in file order.

    Raises:
        DataError: the file is missing or not JSON (with line and column), a key is missing or has the wrong
            type (named by its path, e.g. ``data[3].paragraphs[2].qas[0].answers``), an id repeats, or an
            answer text is empty or not found near its ``answer_start``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SQuAD file not found: {path}; set the data dir with --data or SLIMFORMER_DATA")
    try:
        root = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    examples: list[QAExample] = []
    seen: set[str] = set()
    moved = 0
    for a, article in enumerate(_get(root, "data", list, "", path)):
        where_a = f"data[{a}]"
        title = _get(article, "title", str, where_a, path)
        for p, para in enumerate(_get(article, "paragraphs", list, where_a, path)):
            where_p = f"{where_a}.paragraphs[{p}]"
            context = _get(para, "context", str, where_p, path)
            for q, qa in enumerate(_get(para, "qas", list, where_p, path)):
                where_q = f"{where_p}.qas[{q}]"
                qid = _get(qa, "id", str, where_q, path)
                question = _get(qa, "question", str, where_q, path)
                if qid in seen:
                    raise DataError(f"{path}: {where_q}.id {qid!r} repeats an earlier question id")
                seen.add(qid)
                answers = []
                for n, ans in enumerate(_get(qa, "answers", list, where_q, path)):
                    where_n = f"{where_q}.answers[{n}]"
                    text = _get(ans, "text", str, where_n, path)
                    start = _get(ans, "answer_start", int, where_n, path)
                    if not text:
                        raise DataError(f"{path}: {where_n}.text is empty")
                    found = _locate(context, text, start)
                    if found < 0:
                        raise DataError(
                            f"{path}: {where_n}: answer {text[:40]!r} is not in the context at or within "
                            f"{MAX_ANSWER_SHIFT} characters of answer_start={start}"
                        )
                    moved += found != start
                    answers.append((text, found))
                examples.append(QAExample(qid, title, context, question, tuple(answers)))
    if moved:
        logger.warning("%s: moved answer_start of %d answer(s) to where the text is", path, moved)
    return examples


def _article_rank(title: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{title}".encode()).hexdigest()


def article_split(
    examples: Sequence[QAExample],
    *,
    eval_fraction: float = 0.25,
    seed: int = 0,
    holdout_ids: Collection[str] = (),
) -> tuple[list[QAExample], list[QAExample]]:
    """Split questions into a train part and an eval part that share no article (hence no paragraph).

    Articles are ordered by ``sha256(f"{seed}:{title}")`` (independent of file order and Python version);
    the first ``round(eval_fraction * n_articles)`` (at least 1) form the eval part, the rest the train part.
    Both parts keep the file order of the questions.

    On the official dev-v1.1.json (48 articles, 2067 paragraphs, 10570 questions) the defaults
    (``"dev-article-split"``) give 36 train articles / 1558 paragraphs / 8174 questions and 12 eval
    articles / 509 paragraphs / 2396 questions. With ``holdout_ids`` = the XQuAD ids the train part keeps
    1378 paragraphs / 7263 questions (180 of XQuAD's 240 paragraphs are in train articles, 60 in eval ones).

    Args:
        examples: questions, e.g. from :func:`read_squad`.
        eval_fraction: share of articles held out, in ``(0, 1)``.
        seed: changes which articles are held out.
        holdout_ids: question ids whose whole paragraphs are dropped from the train part (they stay in the
            eval part if their article is there). Pass the XQuAD ids: XQuAD's 240 paragraphs are SQuAD dev
            paragraphs with the same question ids, so training on them leaks into XQuAD evaluation.

    Returns:
        ``(train, eval)`` lists of examples.

    Raises:
        ConfigError: ``eval_fraction`` is outside ``(0, 1)`` or there are fewer than two articles.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    titles = sorted({ex.title for ex in examples}, key=lambda t: _article_rank(t, seed))
    if len(titles) < 2:
        raise ConfigError(f"an article split needs at least two articles, got {len(titles)}")
    k = min(max(1, round(eval_fraction * len(titles))), len(titles) - 1)
    eval_titles = set(titles[:k])
    held = set(holdout_ids)
    held_paragraphs = {(ex.title, ex.context) for ex in examples if ex.id in held}
    train = [ex for ex in examples if ex.title not in eval_titles and (ex.title, ex.context) not in held_paragraphs]
    evaluation = [ex for ex in examples if ex.title in eval_titles]
    return train, evaluation


SQUAD_SPLITS: dict[str, Callable[[Sequence[QAExample]], tuple[list[QAExample], list[QAExample]]]] = {
    "dev-article-split": partial(article_split, eval_fraction=0.25, seed=0),
}
"""Named ``(examples) -> (train, eval)`` splits; select one by name with :func:`split_squad`."""


def split_squad(
    examples: Sequence[QAExample], name: str = "dev-article-split"
) -> tuple[list[QAExample], list[QAExample]]:
    """Apply the split registered as ``name`` in :data:`SQUAD_SPLITS`.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the known splits).
    """
    if name not in SQUAD_SPLITS:
        raise ConfigError(f"unknown SQuAD split {name!r}; known splits: {', '.join(SQUAD_SPLITS)}")
    return SQUAD_SPLITS[name](examples)
