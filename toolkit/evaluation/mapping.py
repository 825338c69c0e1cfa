"""A catalog read through a mapping: its own columns translated into the tagger vocabulary's terms.

`toolkit eval --mapping FILE` scores a catalog whose columns and values are not the
vocabulary's (the H&M articles: `product_type_name` "Vest top" is the vocabulary's
articleType "Tops"). The mapping is a JSON file users edit (toolkit/evaluation/mappings/hm.json):

    {"id": "article_id", "image": "{article_id}.jpg", "title": "{colour_group_name} {prod_name}",
     "split": "all",
     "columns": {"articleType": {"from": "product_type_name", "values": {"Vest top": "Tops", ...}}, ...}}

A key of `columns` is a vocabulary column (or group name, for a group without one: pattern);
a row whose value the mapping does not translate is unlabelled for that column, so it is not
scored on it (it stays in the gallery). `MappingSummary` says what was mapped, how many rows
each column labels, the commonest values left out, and the vocabulary groups nothing maps to.
"""
from __future__ import annotations

import csv
import json
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from toolkit.evaluation.catalog import LabelledItem, _image_path
from toolkit.ground.errors import CatalogError, ConfigError

if TYPE_CHECKING:
    from taggers.clip_local import Group

#: The mappings that ship with the toolkit, by name (`--mapping hm`).
SHIPPED = Path(__file__).resolve().parent / "mappings"
#: Values left out that the summary names, per column.
LEFT_OUT_SHOWN = 8


@dataclass
class Mapping:
    path: Path
    id: str
    image: str
    title: str
    split: str
    #: vocabulary column -> (catalog column, {catalog value: vocabulary label})
    columns: dict[str, tuple[str, dict[str, str]]]
    name: str = ""

    def sources(self) -> list[str]:
        """The catalog columns the mapping reads."""
        fields = [f for t in (self.image, self.title) for _, f, _, _ in string.Formatter().parse(t) if f]
        return sorted({self.id, *fields, *(src for src, _ in self.columns.values())})


@dataclass
class MappingSummary:
    """What a mapping made of a catalog: JSON-able, in eval.json and the report."""
    file: str
    name: str
    #: vocabulary column -> {"from": catalog column, "labelled": rows, "of": rows, "left_out": {value: rows}}
    columns: dict[str, dict] = field(default_factory=dict)
    #: vocabulary groups (by column) that the mapping does not map: not scored on this catalog
    unmapped: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"mapping {self.file} ({self.name})" if self.name else f"mapping {self.file}"]
        for col, c in self.columns.items():
            left = ", ".join(f"{v} ({n})" for v, n in c["left_out"].items())
            out.append(f"  {col} <- {c['from']}: {c['labelled']} of {c['of']} photos labelled"
                       + (f"; not mapped: {left}" if left else ""))
        if self.unmapped:
            out.append(f"  not mapped (no column of this catalog, not scored): {', '.join(self.unmapped)}")
        return out


def resolve(mapping: str | Path) -> Path:
    """A mapping file, or the name of a shipped one (`hm`)."""
    path = Path(mapping)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{mapping}.json"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.json")))
    raise ConfigError(f"--mapping {mapping}: no such file, nor a shipped mapping ({names})")


def load_mapping(mapping: str | Path) -> Mapping:
    path = resolve(mapping)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        columns = {target: (spec["from"], {str(k): v for k, v in spec.get("values", {}).items() if v})
                   for target, spec in raw["columns"].items()}
        return Mapping(path=path, id=raw.get("id", "id"), image=raw.get("image", "{" + raw.get("id", "id") + "}.jpg"),
                       title=raw.get("title", ""), split=raw.get("split", "all"), columns=columns,
                       name=raw.get("name", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--mapping {path}: not a mapping file ({exc!r}); it needs \"columns\": "
                          "{\"articleType\": {\"from\": COLUMN, \"values\": {...}}, ...}") from exc


def mapped_columns(mapping: Mapping, groups: Sequence["Group"]) -> tuple[dict[str, str], list[str]]:
    """Tag group -> the vocabulary column (or group name) a mapped label sits under, for the
    groups the mapping maps; and the vocabulary columns it does not map."""
    known = {n for g in groups for n in (g.column, g.name) if n}
    unknown = sorted(set(mapping.columns) - known)
    if unknown:
        raise ConfigError(f"--mapping {mapping.path}: {', '.join(unknown)} is not a column of the tag vocabulary; "
                          f"map to {', '.join(g.column or g.name for g in groups)}")
    found, unmapped = {}, []
    for g in groups:
        name = next((n for n in (g.column, g.name) if n and n in mapping.columns), None)
        if name:
            found[g.name] = name
        else:
            unmapped.append(g.column or g.name)
    return found, unmapped


def read_mapped(catalog_csv: Path, images: Path, mapping: Mapping,
                groups: Sequence["Group"]) -> tuple[list[LabelledItem], list[str], MappingSummary, dict[str, str]]:
    """The catalog's rows as labelled photos in the vocabulary's terms; the rows without a photo
    (named, not fatal); what the mapping made of the catalog; tag group -> label column."""
    if not catalog_csv.is_file():
        raise CatalogError(f"{catalog_csv}: no such file")
    with catalog_csv.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        absent = [c for c in mapping.sources() if c not in header]
        if absent:
            raise CatalogError(f"{catalog_csv}: no column {', '.join(absent)}, which --mapping {mapping.path} reads")
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    columns, unmapped = mapped_columns(mapping, groups)
    items, missing = [], []
    left_out: dict[str, Counter] = {c: Counter() for c in columns.values()}
    labelled: Counter = Counter()
    for r in rows:
        name = mapping.image.format(**r)
        path = _image_path(images, name)
        if path is None:
            missing.append(f"{r[mapping.id]}: no photo {name} under {images}")
            continue
        labels = {}
        for target in columns.values():
            source, values = mapping.columns[target]
            label = values.get(r[source], "")
            if label:
                labels[target] = label
                labelled[target] += 1
            elif r[source]:
                left_out[target][r[source]] += 1
        title = " ".join(mapping.title.format(**r).split()) if mapping.title else ""
        items.append(LabelledItem(r[mapping.id], title, path, labels))
    summary = MappingSummary(file=mapping.path.name, name=mapping.name, unmapped=unmapped)
    for target in columns.values():
        summary.columns[target] = {"from": mapping.columns[target][0], "labelled": labelled[target], "of": len(items),
                                   "left_out": dict(left_out[target].most_common(LEFT_OUT_SHOWN))}
    return items, missing, summary, columns
