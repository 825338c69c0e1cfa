"""Help pages that read like the classic click CLIs (sqlite-utils, llm): `SOURCE`, `--tagger TEXT`,
flags without a type, one definition list per section.

Typer 0.29 labels every parameter with its Python type (`<bool>`, `<list[str]>`) and writes
required arguments as `{source}`, with no setting to turn that off; these classes render the
parameters with click's own metavars instead. Commands opt in with `cls=PlainCommand`, groups
with `cls=PlainGroup`; `plain_help(app)` gives them to a whole app.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


#: One or two lines a user can copy, per command; every command has some (tests/test_cli.py).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "tag": ("toolkit tag ./photos", "toolkit tag s3://my-bucket/products/ --tagger local --dry-run"),
    "search": ('toolkit search "red summer dress" --where "price<50" -k 5',
               "toolkit search --image photo.jpg --where gender=Women --json"),
    "stats": ("toolkit stats", "toolkit stats --json"),
    "config": ("toolkit config",),
    "eval": ("toolkit eval --catalog styles.csv --images images/ --out eval-report",),
    "reindex": ("toolkit reindex --model offline --heads my-heads.safetensors",),
    "serve": ("toolkit serve --port 8000",),
    "catalog import": ("toolkit catalog import products.csv",),
    "collections list": ("toolkit collections list",),
    "collections use": ("toolkit collections use catalog",),
    "collections drop": ("toolkit collections drop catalog-old --yes",),
    "events import": ("toolkit events import purchases.csv",
                      "toolkit events import transactions.csv --map user_id=customer_id --map item_id=article_id --map ts=t_dat"),
    "events items": ("toolkit events items articles.csv --id article_id",),
    "users import": ("toolkit users import customers.csv --id customer_id",),
    "recommend rules": ("toolkit recommend rules --min-support 0.001 --min-confidence 0.3",),
    "recommend together": ("toolkit recommend together 0684209013 -k 5",),
    "recommend user": ("toolkit recommend user 00a4f3b2 -k 12",),
    "recommend trending": ("toolkit recommend trending --facet index_group_name=Ladieswear",),
    "recommend train": ("toolkit recommend train",),
    "recommend eval": ("toolkit recommend eval --weeks 8",),
    "model train": ("toolkit model train --images images/ --catalog styles.csv --out my-heads.safetensors",),
    "model train-tags": ("toolkit model train-tags --images images/ --catalog styles.csv",),
    "model info": ("toolkit model info",),
}


def _write_examples(ctx: Any, formatter: Any) -> None:
    names, at = [], ctx
    while at.parent is not None:  # the command's names below the program, however it was run
        names.append(at.info_name)
        at = at.parent
    examples = EXAMPLES.get(" ".join(reversed(names)))
    if examples:
        with formatter.section("Examples"):
            for line in examples:  # as typed: never wrapped inside a path or an option
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")


_NAMES = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", Path: "PATH"}


def _metavar(param: TyperOption) -> str:
    """click's classic metavar: TEXT, INTEGER, FLOAT, PATH, or the choices [a|b]."""
    if param.metavar:
        return param.metavar
    desc = param.type_descriptor
    if desc.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
    annotation = desc.annotation
    if get_origin(annotation) in (list, tuple):
        annotation = (get_args(annotation) or (str,))[0]
    return _NAMES.get(annotation, getattr(annotation, "__name__", "VALUE").upper())


def _default(param: TyperOption) -> str | None:
    value = param.default
    if callable(value) or value in (None, False, "", [], ()) or param.is_flag or not param.show_default:
        return None
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(getattr(value, "value", value))


def _option_record(param: TyperOption, ctx: Any) -> tuple[str, str]:
    names = ", ".join(sorted(param.opts, key=len))
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    if not param.is_flag and not param.count:
        names += " " + _metavar(param)
    extra = [f"default: {d}" for d in [_default(param)] if d] + (["required"] if param.required else [])
    help_text = param.help or ""
    return names, f"{help_text}  [{'; '.join(extra)}]".strip() if extra else help_text


def _argument_name(param: TyperArgument) -> str:
    name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
    return name if param.required else f"[{name}]"


def _argument_record(param: TyperArgument) -> tuple[str, str]:
    name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
    return name, (param.help or "") + ("  [required]" if param.required else "")


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    return pieces + [_argument_name(p) for p in command.get_params(ctx) if isinstance(p, TyperArgument)]


def _write_sections(command: Any, ctx: Any, formatter: Any) -> None:
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [_argument_record(p) for p in params if isinstance(p, TyperArgument)]
    options = [_option_record(p, ctx) for p in params if isinstance(p, TyperOption)]
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    if options:
        with formatter.section("Options"):
            formatter.write_dl(options)


class _PlainHelp:
    """What commands and groups share: the usage line, then the text, the parameters, and what
    each kind lists below them (`_format_rest`), then the epilog."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.format_usage(ctx, formatter)  # type: ignore[attr-defined]
        self.format_help_text(ctx, formatter)  # type: ignore[attr-defined]
        _write_sections(self, ctx, formatter)
        self._format_rest(ctx, formatter)
        self.format_epilog(ctx, formatter)  # type: ignore[attr-defined]

    def _format_rest(self, ctx: Any, formatter: Any) -> None:
        raise NotImplementedError


class PlainCommand(_PlainHelp, TyperCommand):
    def _format_rest(self, ctx: Any, formatter: Any) -> None:
        _write_examples(ctx, formatter)


def summary(command: Any) -> str:
    """A command's first sentence, whole: what `toolkit --help` lists beside its name."""
    text = " ".join((command.short_help or command.help or "").split())
    end = text.find(". ")
    return text[: end + 1] if end >= 0 else text


class PlainGroup(_PlainHelp, TyperGroup):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]

    def _format_rest(self, ctx: Any, formatter: Any) -> None:
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, summary(cmd)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def plain_help(app: Any) -> Any:
    """Give every command and group of a Typer app (and of the apps added to it) these help pages."""
    if not isinstance(app.info.cls, type) or not issubclass(app.info.cls, PlainGroup):
        app.info.cls = PlainGroup
    for command in app.registered_commands:
        if not isinstance(command.cls, type) or command.cls is TyperCommand:
            command.cls = PlainCommand
    for group in app.registered_groups:
        group.cls = PlainGroup
        plain_help(group.typer_instance)
    return app
