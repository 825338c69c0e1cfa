"""`--fail-under` gates: parsing `metric=value`, the metrics a catalog will report, and which gates fall."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from toolkit.evaluation.catalog import catalog_header, label_columns
from toolkit.evaluation.metrics import KS, RETRIEVAL_GROUPS
from toolkit.ground.errors import ConfigError

GATE = re.compile(r"^\s*([\w.@]+)\s*=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_gate(text: str) -> tuple[str, float]:
    """`image.articleType.p@5=0.85` -> ("image.articleType.p@5", 0.85)."""
    m = GATE.match(text)
    if not m:
        raise ConfigError(f"--fail-under {text!r} must look like metric=value, e.g. image.articleType.p@5=0.85")
    return m.group(1), float(m.group(2))


def failed_gates(metrics: dict[str, float], gates: Sequence[tuple[str, float]],
                 margins: dict[str, float] | None = None) -> list[str]:
    """One line per gate the figures fall under; a gate naming no metric is an error, not a pass."""
    check_gate_names(gates, set(metrics))
    return [f"{name} = {metrics[name]:.4g} < {floor:g}{_plus_minus(margins, name)}"
            for name, floor in gates if metrics[name] < floor]


def narrow_gates(metrics: dict[str, float], gates: Sequence[tuple[str, float]],
                 margins: dict[str, float]) -> list[str]:
    """One line per gate passed by less than the figure's 95% margin: another sample of the same
    catalog could fail it, so a CI gate set there will fail now and then with no model change."""
    return [f"{name} = {metrics[name]:.4g} >= {floor:g}{_plus_minus(margins, name)}"
            for name, floor in gates if name in metrics and floor <= metrics[name] < floor + margins.get(name, 0.0)]


def _plus_minus(margins: dict[str, float] | None, name: str) -> str:
    return f" (±{margins[name]:.2g} at 95%)" if margins and name in margins else ""


def metric_names(columns: dict[str, str]) -> set[str]:
    """The metrics a run over a catalog with these labelled columns reports (tag group -> column)."""
    attrs = [columns[g] for g in RETRIEVAL_GROUPS if g in columns]
    scored = attrs + (["all"] if len(attrs) > 1 else [])
    names = {f"image.{a}.p@{k}" for a in scored for k in KS} | {f"query.{a}.p@10" for a in scored}
    names |= {"query.mean.p@10"} if len(attrs) > 1 else set()
    names |= {"text.recall@1", "text.recall@10", "text.mrr"}
    return names | {f"tags.{c}.{k}" for c in columns.values() for k in ("accuracy", "coverage", "accuracy@threshold")}


def planned_metrics(catalog_csv: Path, vocabulary: Path | None = None, mapping: "str | Path | None" = None) -> set[str]:
    """Metric names from the catalog's header (or the mapping) alone, so a mistyped gate fails
    before the model loads."""
    from taggers.clip_local import load_vocabulary

    groups = load_vocabulary(vocabulary)
    if mapping is not None:
        from toolkit.evaluation.mapping import load_mapping, mapped_columns

        return metric_names(mapped_columns(load_mapping(mapping), groups)[0])
    return metric_names(label_columns(groups, catalog_header(Path(catalog_csv))))


def check_gate_names(gates: Sequence[tuple[str, float]], known: set[str]) -> None:
    unknown = [name for name, _ in gates if name not in known]
    if unknown:
        raise ConfigError(f"--fail-under names no metric: {', '.join(unknown)}; "
                          f"metrics for this catalog: {', '.join(sorted(known))}")
