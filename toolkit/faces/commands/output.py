"""Printing shared by commands: data to stdout, progress and messages to stderr."""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Iterator

from rich.console import Console

out = Console(soft_wrap=False)
err = Console(stderr=True)


def print_json(value: Any) -> None:
    print(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


@contextmanager
def item_progress(verb: str, statuses: list[str], announce: set[str], listed: str = ""
                  ) -> Iterator[tuple[Callable[..., None], Callable[[int], None]]]:
    """A progress bar on stderr counting items by status, as (on_item, on_listed) callbacks.
    Without a terminal (CI logs) there is no bar, and items with an `announce` status are printed."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    counts = dict.fromkeys(statuses, 0)
    total = "{task.completed}/{task.total}" + (f" {listed}" if listed else "")
    with Progress(SpinnerColumn(), TextColumn(f"[bold]{verb}[/]"), BarColumn(bar_width=None),
                  TextColumn(total), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("", total=None)

        def on_item(ref: Any, status: str, reason: str | None) -> None:
            counts[status] += 1
            bar.update(task, advance=1, description=" ".join(f"{k} {v}" for k, v in counts.items() if v))
            if status in announce and not err.is_terminal:
                err.print(f"{status}: {reason}", highlight=False, soft_wrap=True)

        yield on_item, lambda n: bar.update(task, total=n)
