"""Files written whole or not at all, and CSV read one way everywhere.

Every cache, model and record file goes through `atomic_path`: a reader in another process
sees the old file or the new one, never half of either. Every CSV goes through `csv_rows`:
UTF-8 with or without a byte-order mark (Excel writes one), header names and values stripped.
"""
from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block ends without
    an error, and is removed when it raises. The temporary name keeps the suffix (np.savez adds
    `.npz` to a name without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def csv_header(path: Path) -> list[str]:
    """The stripped header of a CSV file; [] for an empty file."""
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        return [name.strip() for name in next(csv.reader(fh), [])]


def csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row, names and values stripped; columns without a
    header name are dropped. The line number is the file's, for messages about a bad row."""
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            yield reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}
