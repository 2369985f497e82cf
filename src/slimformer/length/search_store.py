"""The search's cache of measured genes, mirrored to a JSON file so an interrupted search can resume.

File layout (one JSON object, rewritten atomically with :func:`slimformer.io.atomic_write_json`)::

    {"format": "slimformer.length-search", "version": 1,
     "fingerprint": {"model": "...", "num_layers": 6, "max_length": 128, "metric": "accuracy", "cost": "MACs"},
     "settings": {...the last run's search settings, for the record...},
     "records": [{"config": [128, 120, ...], "cost": 2.1e9, "metric": 0.91}, ...]}

``metric`` is ``null`` for a gene whose cost is known but that was never evaluated (infeasible child).
The fingerprint names what a measurement depends on: a store written for another model, depth, padded
length, metric or cost is refused. Search settings (seed, sizes) are not part of it: a cached
measurement stays valid when they change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slimformer._faults import kill_point
from slimformer.errors import ConfigError
from slimformer.io import atomic_write_json, read_json

__all__ = ["STORE_FORMAT", "SearchStore"]

STORE_FORMAT = "slimformer.length-search"
#: 2: ratio configurations keep tokens per batch row (version-1 metrics of ratio genes were measured with the
#: longest row of each padded batch as the reference length, so they are stale)
_VERSION = 2

Gene = tuple[int, ...]


class SearchStore:
    """Gene -> cost and gene -> metric caches, loaded from and flushed to ``path`` (or memory only).

    Args:
        path: the JSON file, or ``None`` to keep the cache in memory.
        fingerprint: what the measurements depend on (see the module docstring); JSON-serialisable.
        settings: the search settings, stored for the record only.

    Raises:
        ConfigError: ``path`` exists but is not a search store, or was written for another fingerprint.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, fingerprint: Mapping[str, Any], settings: Mapping[str, Any]
    ):
        self.path = Path(path) if path is not None else None
        self.fingerprint = dict(fingerprint)
        self.settings = dict(settings)
        self.costs: dict[Gene, float] = {}
        self.metrics: dict[Gene, float] = {}
        self._dirty = False
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            data = read_json(path)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"search store {path} is not readable JSON ({type(e).__name__}); delete it or pass another path"
            ) from e
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise ConfigError(f'{path} is not a length-search store (no "format": {STORE_FORMAT!r}); pass another path')
        if data.get("version") != _VERSION:
            raise ConfigError(
                f"search store {path} has version {data.get('version')!r}; this slimformer reads {_VERSION} "
                "(its measurements may be stale): delete it to search again"
            )
        stored = data.get("fingerprint")
        if stored != self.fingerprint:
            stored = stored if isinstance(stored, dict) else {}
            diff = ", ".join(
                f"{k}={stored.get(k)!r} (now {self.fingerprint.get(k)!r})"
                for k in sorted(set(stored) | set(self.fingerprint))
                if stored.get(k) != self.fingerprint.get(k)
            )
            raise ConfigError(
                f"search store {path} was written for another search setup: {diff}; delete it or pass another path"
            )
        try:
            for rec in data["records"]:
                gene = tuple(int(x) for x in rec["config"])
                self.costs[gene] = float(rec["cost"])
                if rec.get("metric") is not None:
                    self.metrics[gene] = float(rec["metric"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"search store {path} has a malformed record ({type(e).__name__}: {e})") from e

    def set_cost(self, gene: Gene, cost: float) -> None:
        """Cache a gene's cost (written at the next :meth:`flush`)."""
        self.costs[gene] = cost
        self._dirty = True

    def set_metric(self, gene: Gene, metric: float) -> None:
        """Cache a gene's metric (its cost must be cached already) and write the file."""
        self.metrics[gene] = metric
        self._dirty = True
        self.flush()

    def flush(self) -> None:
        """Rewrite the file atomically if anything changed since the last write."""
        if self.path is None or not self._dirty:
            return
        records = [{"config": list(g), "cost": c, "metric": self.metrics.get(g)} for g, c in self.costs.items()]
        atomic_write_json(
            self.path,
            {
                "format": STORE_FORMAT,
                "version": _VERSION,
                "fingerprint": self.fingerprint,
                "settings": self.settings,
                "records": records,
            },
        )
        self._dirty = False
        kill_point("search:after-store")  # kill-and-resume tests: the store holds what was evaluated so far
