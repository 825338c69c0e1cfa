"""`toolkit model ...`: train the offline model's projection heads."""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Train and inspect the offline embedding model.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Train and inspect the offline embedding model."""


def _progress(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
def train(
    images: Path = typer.Option(..., "--images", help="Folder of product photos named <id>.jpg."),
    catalog: Path = typer.Option(..., "--catalog", help="styles.csv-like catalog: id, productDisplayName, "
                                 "articleType, baseColour, gender, usage, season, masterCategory."),
    out: Path = typer.Option(Path(".toolkit/heads.safetensors"), "--out",
                             help="Where to write the heads (a .json sidecar is written beside it)."),
    epochs: int = typer.Option(60, "--epochs", min=1, help="Passes over the training photos."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed and data give the same heads."),
    include_eval: bool = typer.Option(False, "--include-eval",
                                      help="Also train on the eval split (then quality figures are not fair)."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0: one per core)."),
    finetune_blocks: int = typer.Option(0, "--finetune-blocks", min=0, max=4,
                                        help="Also fine-tune this many last blocks of the image backbone "
                                             "(slower; their weights go into the heads file)."),
) -> None:
    """Train projection heads on a catalog's photos and attributes (eval split left out)."""
    from toolkit.training import train_heads

    report = train_heads(images, catalog, out, epochs=epochs, seed=seed, exclude_eval=not include_eval,
                         threads=threads, finetune_blocks=finetune_blocks, progress=_progress)
    typer.echo(f"wrote {report.out} ({report.n_train} photos, {report.n_captions} captions, "
               f"{report.epochs} epochs, final loss {report.final_loss:.4f}, {report.seconds:.0f} s)")
    typer.echo(f"model id {report.model_id}; use it with TOOLKIT_HEADS_PATH={report.out}")
    typer.echo(f"sha256 {report.sha256}")


@app.command()
def info(
    heads: Path = typer.Option(None, "--heads", help="Heads file (default: TOOLKIT_HEADS_PATH or the shipped one)."),
) -> None:
    """Show the offline model's id, dimension and how its heads were trained."""
    from toolkit.settings import load_settings
    from toolkit.training import heads_info

    for key, value in heads_info(heads or load_settings().heads_path).items():
        typer.echo(f"{key}: {value}")
