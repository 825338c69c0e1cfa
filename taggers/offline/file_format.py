"""The toolkit's record in a safetensors file's header: one format name and a config, as JSON.

The heads file and the tag-classifier file both carry one (`{"toolkit": {"format", "config"}}`);
it is written and read here alone. Reading needs no torch: the header is a length-prefixed
JSON block at the start of the file, so a model id or a dimension costs one small read.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.ground.files import atomic_path

if TYPE_CHECKING:
    import torch

#: The format names of the two files that carry a record.
HEADS_FORMAT = "toolkit-heads-v1"
TAG_HEADS_FORMAT = "toolkit-tag-heads-v1"


def header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file. Raises ValueError for a file that has none."""
    with open(path, "rb") as fh:
        try:
            (n,) = struct.unpack("<Q", fh.read(8))
        except struct.error:
            raise ValueError("too short for a safetensors file") from None
        return json.loads(fh.read(n))


def read_config(path: Path, format: str) -> dict[str, Any]:
    """The config recorded in the file's header; ValueError unless the file is of `format`."""
    meta = header(path).get("__metadata__") or {}
    info = json.loads(meta.get("toolkit", "{}"))
    if not isinstance(info, dict) or info.get("format") != format:
        raise ValueError(f"not a {format} file")
    return info["config"]


def save(tensors: dict[str, "torch.Tensor"], path: Path, format: str, config: dict[str, Any]) -> None:
    """Write `tensors` with the record (whole or not at all). One metadata key only: safetensors
    writes its metadata map in no fixed order, and several keys would make the file's bytes
    (so its SHA-256 and model id) vary run to run."""
    from safetensors.torch import save_file

    meta = json.dumps({"format": format, "config": config}, sort_keys=True)
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={"toolkit": meta})
