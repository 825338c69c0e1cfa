"""`--where` filters: `group=label` for tags, `price<50` for numbers, `attr.brand=Puma` for catalog columns.

Tag filters match whichever provider gave the tag, case-insensitively. Catalog fields
(title, price, currency, product_id, kind) and attributes filter on their stored values.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from toolkit.ground.errors import QueryError
from toolkit.records import ATTR_PREFIX, DIRECT_FIELDS, NUMERIC_FIELDS, filter_token

_OPS = {"=": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_EXPR = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(!=|<=|>=|=|<|>)\s*(.+?)\s*$")

Where = Mapping[str, object] | Sequence[str] | str | None


def parse_expr(expr: str) -> tuple[str, str, str]:
    m = _EXPR.match(expr)
    if not m:
        raise QueryError(f"filter {expr!r} is not of the form field=value (or field<value for numbers), "
                         "e.g. colour=black or price<50")
    return m.group(1), m.group(2), m.group(3)


def _clause(field: str, op: str, value: str) -> dict:
    if field in NUMERIC_FIELDS or op in ("<", "<=", ">", ">="):
        try:
            number: object = float(value)
        except ValueError:
            raise QueryError(f"filter {field}{op}{value}: {value!r} is not a number") from None
        if field not in NUMERIC_FIELDS and not field.startswith("attr."):
            raise QueryError(f"filter {field}{op}{value}: only price and timestamp compare as numbers")
        key = ATTR_PREFIX + field[5:] if field.startswith("attr.") else field
        return {key: {_OPS[op]: number}}
    if field in DIRECT_FIELDS:
        return {field: {_OPS[op]: value}}
    if field.startswith("attr."):
        return {ATTR_PREFIX + field[5:]: {_OPS[op]: value}}
    token = filter_token(field, value)
    if op == "=":
        return {"tags": {"$contains": token}}
    if op == "!=":
        return {"tags": {"$not_contains": token}}
    raise QueryError(f"filter {field}{op}{value}: tags take = or !=")


def to_chroma_where(where: Where) -> dict | None:
    """Filters as the user writes them -> one Chroma `where` clause (None for no filter)."""
    if where is None or where == "" or where == [] or where == {}:
        return None
    if isinstance(where, str):
        where = [where]
    clauses = []
    if isinstance(where, Mapping):
        for field, value in where.items():
            f, op = _split_op(field)
            clauses.append(_clause(f, op, str(value)))
    else:
        for expr in where:
            clauses.append(_clause(*parse_expr(expr)))
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _split_op(field: str) -> tuple[str, str]:
    """{"price<": 50} is price<50; {"colour": "black"} is colour=black."""
    for op in ("!=", "<=", ">=", "<", ">", "="):
        if field.endswith(op):
            return field[: -len(op)].strip(), op
    return field.strip(), "="
