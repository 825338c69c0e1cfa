"""Reading an events, users or items file: CSV or Parquet, local or `s3://`, every value as text."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd

from toolkit.recommend.errors import EventsError
from toolkit.recommend.events import Source

#: Reads the bytes of an `s3://bucket/key` URI (the service passes one that uses the toolkit's S3 settings).
ReadS3 = Callable[[str], bytes]


def read_source(uri: str | Path, read_s3: ReadS3 | None = None) -> Source:
    name = str(uri)
    data = _bytes(name, read_s3)
    if not data:
        raise EventsError(f"{name} is empty (0 bytes): nothing imported; give a CSV with a header row, or a Parquet file")
    if name.lower().endswith((".parquet", ".pq")) or data[:4] == b"PAR1":
        return Source(name, _parquet(name, data), 1, "row")
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise EventsError(f"{name} cannot be read as CSV ({str(exc).strip()}); nothing imported") from None
    return Source(name, frame.astype(object), 2, "line")


def _bytes(name: str, read_s3: ReadS3 | None) -> bytes:
    if name.startswith("s3://"):
        if read_s3 is None:
            raise EventsError(f"{name}: no S3 reader configured")
        return read_s3(name)
    path = Path(name)
    if not path.is_file():
        raise EventsError(f"{name}: no such file; give the path of a CSV or Parquet file")
    return path.read_bytes()


def _parquet(name: str, data: bytes) -> pd.DataFrame:
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            with duckdb.connect() as connection:
                frame = connection.execute("SELECT * FROM read_parquet(?)", [tmp.name]).df()
        except duckdb.Error as exc:
            raise EventsError(f"{name} cannot be read as Parquet ({exc}); nothing imported") from None
    return frame.astype(str).where(frame.notna(), "").astype(object)
