"""`where` filters on recommendations, written as for search: `price<50`, `index_group_name=Ladieswear`,
`attr.colour_group_name=Black`, `colour=Blue` (a tag), `title=...`, `product_id=...`. They apply to a product as
it is shown: the items table's fields, filled from the vector store's card (price, photo tags) where it has one."""
from __future__ import annotations

import operator
from typing import Callable, Mapping, Sequence

from toolkit.ground.errors import QueryError
from toolkit.search.filters import parse_expr
from toolkit.recommend.records import Item

Where = Mapping[str, object] | Sequence[str] | str | None
_OPS: dict[str, Callable[[object, object], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
Clause = tuple[str, str, str]


def clauses(where: Where) -> list[Clause]:
    if not where:
        return []
    if isinstance(where, str):
        where = [where]
    if isinstance(where, Mapping):
        out = []
        for key, value in where.items():
            op = next((o for o in ("!=", "<=", ">=", "<", ">", "=") if key.endswith(o)), "=")
            out.append((key[: len(key) - len(op)].strip() if key.endswith(op) else key.strip(), op, str(value)))
        return out
    return [parse_expr(expr) for expr in where]


def matches(item: Item | None, where: list[Clause]) -> bool:
    """Does the item meet every clause? An item the items table lacks meets none."""
    if not where:
        return True
    if item is None:
        return False
    return all(_meets(item, field, op, value) for field, op, value in where)


def _meets(item: Item, field: str, op: str, value: str) -> bool:
    name = field[5:] if field.startswith("attr.") else field
    if name == "price":
        try:
            wanted = float(value)
        except ValueError:
            raise QueryError(f"filter {field}{op}{value}: {value!r} is not a number") from None
        return item.price is not None and _OPS[op](item.price, wanted)
    have = {"product_id": item.product_id, "title": item.title, "currency": item.currency}.get(name)
    if have is None:
        have = item.attributes.get(name, item.tags.get(name))
    if have is None:
        return False
    if op in ("<", "<=", ">", ">="):
        try:
            return _OPS[op](float(have), float(value))
        except ValueError:
            return False
    return _OPS[op](have.lower(), value.lower())
