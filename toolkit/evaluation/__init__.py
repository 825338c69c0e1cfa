"""Evaluating a model and a catalog: scratch indexing, metrics, reports and paired comparison.

    catalog.py   the labelled catalog: label columns, rows with their photos, one split
    scratch.py   indexing the photos through the real pipeline into a scratch collection
    metrics.py   the figures, on plain arrays; record.py the `EvalReport` they fill
    run.py       `evaluate`, the entry point
    gates.py     `--fail-under` gates; compare.py two runs photo by photo; report.py eval.html
"""
from __future__ import annotations

from toolkit.evaluation.gates import check_gate_names, failed_gates, narrow_gates, parse_gate, planned_metrics
from toolkit.evaluation.record import EvalReport
from toolkit.evaluation.run import evaluate

__all__ = ["EvalReport", "check_gate_names", "evaluate", "failed_gates", "narrow_gates", "parse_gate",
           "planned_metrics"]
