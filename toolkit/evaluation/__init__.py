"""Evaluating a model and a catalog: scratch indexing, metrics, reports and paired comparison."""
