"""Segments of users for cold start: age band and gender from `toolkit users import`'s attributes."""
from __future__ import annotations

from typing import Mapping

AGE_BANDS = ((0, 25, "under 25"), (25, 35, "25-34"), (35, 45, "35-44"), (45, 55, "45-54"), (55, 200, "55+"))
GENDER_KEYS = ("gender", "sex")


def segment(attributes: Mapping[str, str] | None) -> str | None:
    """"age 25-34", "female", "female, age 25-34", or None when nothing usable is known."""
    if not attributes:
        return None
    lowered = {k.lower(): v for k, v in attributes.items()}
    parts = []
    gender = next((lowered[k].strip().lower() for k in GENDER_KEYS if lowered.get(k, "").strip()), None)
    if gender:
        parts.append(gender)
    band = age_band(lowered.get("age"))
    if band:
        parts.append(f"age {band}")
    return ", ".join(parts) or None


def age_band(value: str | None) -> str | None:
    try:
        age = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    if age is None:
        return None
    return next((name for lo, hi, name in AGE_BANDS if lo <= age < hi), None)
