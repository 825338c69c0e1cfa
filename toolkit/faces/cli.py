"""The `toolkit` command. The one place a ToolkitError becomes a one-line message and an exit code."""
from __future__ import annotations

import os
import sys

import typer

from toolkit.faces.commands import catalog, collections, config, eval as eval_cmd, recommend, reindex, search, stats, tag
from toolkit.faces.commands.help import plain_help
from toolkit.ground.errors import ToolkitError

app = typer.Typer(help="Turn product photos and videos into a searchable, tagged catalog.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False)
app.command("tag")(tag.tag)
app.command("search")(search.search)
app.command("stats")(stats.stats)
app.command("config")(config.config)
app.command("eval")(eval_cmd.eval_)
app.add_typer(catalog.app, name="catalog")
app.command("reindex")(reindex.reindex)
app.add_typer(collections.app, name="collections")
recommend.register(app)  # toolkit events | users | recommend


def _register_optional() -> None:
    try:
        from toolkit.faces.commands import model
    except ImportError:
        pass
    else:
        app.add_typer(model.app, name="model")
    try:
        from toolkit.faces.commands import serve
    except ImportError:
        return
    app.command("serve")(serve.serve)


_register_optional()
plain_help(app)


def main() -> None:
    try:
        # Without standalone mode, click returns a command's `typer.Exit(code)` instead of raising it.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ToolkitError as exc:
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted: what was stored is kept; run the same command again to resume", err=True)
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
