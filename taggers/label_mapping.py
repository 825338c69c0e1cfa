"""Map a cloud provider's label onto the catalog's fashion vocabulary.

Google says "t-shirt", a Custom Vision project may say "tee" or "article_type:Tshirts", the
catalog says article_type=Tshirts. Mapping them here means a `--where article_type=Tshirts`
filter finds an item whichever service tagged it. Labels the mapping file does not know are
kept as they are, under group "label", so nothing a provider said is lost.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from toolkit.ground.errors import ConfigError

DEFAULT_PATH = Path(__file__).parent / "data" / "provider_labels.json"
UNMAPPED_GROUP = "label"
_SEPARATORS = re.compile(r"[\s\-_/]+")


def normalise(label: str) -> str:
    return _SEPARATORS.sub(" ", label.strip().lower()).strip()


@dataclass(frozen=True)
class LabelMapping:
    """Normalised provider label -> ((group, catalog value), ...), globally and per provider."""

    common: dict[str, tuple[tuple[str, str], ...]]
    per_provider: dict[str, dict[str, tuple[tuple[str, str], ...]]]
    groups: frozenset[str]

    @classmethod
    def load(cls, path: Path | str | None = None) -> "LabelMapping":
        return _load_cached(str(path or DEFAULT_PATH))

    def map(self, provider: str, label: str) -> list[tuple[str, str]]:
        """(group, label) pairs for one provider label; [("label", label)] when unmapped."""
        key = normalise(label)
        found = self.per_provider.get(provider, {}).get(key) or self.common.get(key)
        if found:
            return list(found)
        explicit = self._explicit_group(label)
        if explicit:
            return [explicit]
        return [(UNMAPPED_GROUP, label.strip())]

    def _explicit_group(self, label: str) -> tuple[str, str] | None:
        """A Custom Vision tag can be named after the catalog directly: "colour:Black"."""
        match = re.match(r"^\s*([A-Za-z_ ]+?)\s*[:=]\s*(.+?)\s*$", label)
        if not match:
            return None
        group = normalise(match.group(1)).replace(" ", "_")
        if group not in self.groups:
            return None
        value = match.group(2)
        mapped = self.common.get(normalise(value))
        for mapped_group, mapped_value in mapped or ():
            if mapped_group == group:  # use the catalog's spelling of the value
                return group, mapped_value
        return group, value


@lru_cache(maxsize=8)
def _load_cached(path: str) -> LabelMapping:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"TOOLKIT_LABEL_MAPPING={path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"TOOLKIT_LABEL_MAPPING={path}: not a readable JSON mapping ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"TOOLKIT_LABEL_MAPPING={path}: expected a JSON object")
    vocabulary: dict[str, list[str]] = doc.get("vocabulary", {})
    common = _vocabulary_entries(vocabulary)
    common.update(_synonym_entries(doc.get("synonyms", {}), path))
    per_provider = {name: _synonym_entries(entries, path)
                    for name, entries in doc.get("providers", {}).items()}
    groups = set(vocabulary)
    for entries in [doc.get("synonyms", {}), *doc.get("providers", {}).values()]:
        for target in entries.values():
            groups.update(target)
    return LabelMapping(common, per_provider, frozenset(groups))


def _vocabulary_entries(vocabulary: dict[str, list[str]]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each catalog value maps to itself, and so do its singular forms (Google says "dress",
    the catalog "Dresses"). The first group listing a value keeps it."""
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for group, values in vocabulary.items():
        for value in values:
            key = normalise(value)
            for form in (key, *_singulars(key)):
                out.setdefault(form, ((group, value),))
    return out


def _singulars(key: str) -> list[str]:
    forms = []
    if re.search(r"(s|x|z|ch|sh)es$", key):  # dresses, watches
        forms.append(key[:-2])
    if key.endswith("s") and not key.endswith("ss"):
        forms.append(key[:-1])
    return forms


def _synonym_entries(entries: dict[str, dict[str, str]], path: str) -> dict[str, tuple[tuple[str, str], ...]]:
    out = {}
    for label, target in entries.items():
        if not isinstance(target, dict) or not all(isinstance(v, str) for v in target.values()):
            raise ConfigError(f"TOOLKIT_LABEL_MAPPING={path}: {label!r} must map to {{group: value}}")
        out[normalise(label)] = tuple(target.items())
    return out
