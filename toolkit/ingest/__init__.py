"""Ingest: one pipeline (readers.py -> pipeline.py: decode, embed and tag -> merge.py -> writer.py)
fed by a source (`toolkit tag`) or a stored collection (`toolkit reindex`, reindex.py)."""
