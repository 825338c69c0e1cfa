"""`toolkit model ...`: train the offline model's projection heads."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from toolkit.ground.settings import Settings

app = typer.Typer(help="Train and inspect the offline embedding model.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Train and inspect the offline embedding model."""


def _progress(message: str) -> None:
    typer.echo(message, err=True)


def _pairs(images: list[Path], catalogs: list[Path]) -> tuple[Path, Path, list[tuple[Path, Path]]]:
    """The main (--images, --catalog) pair and the extra ones, paired in the order given."""
    from toolkit.ground.errors import ConfigError

    if len(images) != len(catalogs):
        raise ConfigError(f"{len(images)} --images for {len(catalogs)} --catalog: give one --catalog per "
                          "--images folder, in the same order")
    return images[0], catalogs[0], list(zip(images[1:], catalogs[1:]))


@app.command()
def train(
    images: list[Path] = typer.Option(..., "--images", help="Folder of product photos named <id>.jpg. Repeat "
                                      "with --catalog to train on more folders: the first pair is the main one "
                                      "(its eval split is left out), the others are extra photos."),
    catalog: list[Path] = typer.Option(..., "--catalog", help="styles.csv-like catalog: id, productDisplayName, "
                                       "articleType, baseColour, gender, usage, season, masterCategory; one "
                                       "per --images, in the same order."),
    out: Path = typer.Option(Path(".toolkit/heads.safetensors"), "--out",
                             help="Where to write the heads (a .json sidecar is written beside it)."),
    epochs: int = typer.Option(60, "--epochs", min=1, help="Passes over the training photos."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed and data give the same heads."),
    include_eval: bool = typer.Option(False, "--include-eval",
                                      help="Also train on the eval split (then quality figures are not fair)."),
    hold_out: bool = typer.Option(False, "--hold-out",
                                  help="Also leave out the training split's fixed holdout fifth, to compare "
                                       "settings on it (toolkit eval --split holdout), not on the eval split."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0: one per core)."),
    finetune_blocks: int = typer.Option(0, "--finetune-blocks", min=0, max=4,
                                        help="Also fine-tune this many last blocks of the image backbone "
                                             "(slower; their weights go into the heads file)."),
    backbone: str = typer.Option("efficientnet-lite0", "--backbone",
                                 help="Image backbone: efficientnet-lite0 (224 px, the shipped model's) or "
                                      "efficientnet-lite2 (256 px, about 2x slower to embed; see the README)."),
    augment_views: int = typer.Option(0, "--augment-views", min=0, max=16,
                                      help="Random crops, shifts and turns of each photo to train on besides "
                                           "the photo itself (features computed once and cached)."),
    degrade: float = typer.Option(0.0, "--degrade", min=0.0, max=0.95,
                                  help="With an extra folder of smaller photos: show the main photos shrunk to "
                                       "their size and back up this share of the time (0.5: half), so that both "
                                       "kinds look alike to the model."),
    extra_share: float = typer.Option(1.0, "--extra-share", min=0.01, max=1.0,
                                      help="Train on this fixed share of the extra folders' photos (chosen by "
                                           "id, the same every run; features are computed for those only)."),
    extra_weight: float = typer.Option(1.0, "--extra-weight", min=0.01, max=1.0,
                                       help="Share of the extra folders' photos each epoch shows (a new draw "
                                            "each epoch); 1: all of them."),
) -> None:
    """Train projection heads on a catalog's photos and attributes (eval split left out)."""
    from toolkit.training import train_heads

    main_images, main_catalog, extra = _pairs(images, catalog)
    report = train_heads(main_images, main_catalog, out, epochs=epochs, seed=seed, exclude_eval=not include_eval,
                         threads=threads, finetune_blocks=finetune_blocks, augment_views=augment_views,
                         hold_out=hold_out, backbone=backbone, progress=_progress, extra=extra, degrade=degrade,
                         extra_weight=extra_weight, extra_share=extra_share)
    typer.echo(f"wrote {report.out} ({report.n_train} photos, {report.n_captions} captions, "
               f"{report.epochs} epochs, final loss {report.final_loss:.4f}, {report.seconds:.0f} s)")
    typer.echo(f"model id {report.model_id}; use it with TOOLKIT_HEADS_PATH={report.out}")
    typer.echo(f"sha256 {report.sha256}")


@app.command("train-tags")
def train_tags(
    images: list[Path] = typer.Option(..., "--images", help="Folder of product photos named <id>.jpg "
                                      "(repeatable, with --catalog: the first pair is the main one)."),
    catalog: list[Path] = typer.Option(..., "--catalog", help="Catalog CSV with the vocabulary's columns "
                                       "(articleType, baseColour, gender, usage, season, masterCategory); "
                                       "one per --images."),
    heads: Path = typer.Option(None, "--heads", help="Heads file to train them for (default: the shipped one)."),
    out: Path = typer.Option(None, "--out", help="Where to write them (default: beside the heads, "
                             "x.safetensors -> x.tags.safetensors, which is where the tagger looks)."),
    epochs: int = typer.Option(25, "--epochs", min=1, help="Passes over the training photos."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    include_eval: bool = typer.Option(False, "--include-eval",
                                      help="Also train on the eval split (then quality figures are not fair)."),
    hold_out: bool = typer.Option(False, "--hold-out", help="Also leave out the training split's holdout fifth."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0: one per core)."),
    degrade: float = typer.Option(0.0, "--degrade", min=0.0, max=0.95,
                                  help="As for `toolkit model train`: main photos shown shrunk to the extra "
                                       "folder's photo size and back up this share of the time."),
    extra_share: float = typer.Option(1.0, "--extra-share", min=0.01, max=1.0,
                                      help="As for `toolkit model train`: a fixed share of the extra photos."),
) -> None:
    """Train the label classifiers the local tagger blends with its prompts, for existing heads
    (`toolkit model train` trains them with the heads). Tags change; vectors do not."""
    from toolkit.training import train_tag_heads

    main_images, main_catalog, extra = _pairs(images, catalog)
    report = train_tag_heads(main_images, main_catalog, heads, out, exclude_eval=not include_eval,
                             hold_out=hold_out, epochs=epochs, seed=seed, threads=threads, progress=_progress,
                             extra=extra, degrade=degrade, extra_share=extra_share)
    groups = ", ".join(f"{name} ({n} labels)" for name, n in report.groups.items())
    typer.echo(f"wrote {report.out} ({report.n_train} photos; {groups}; {report.seconds:.0f} s)")
    typer.echo(f"sha256 {report.sha256}")


@app.command()
def info(
    heads: Path = typer.Option(None, "--heads", help="Heads file (default: those of the collection in use, else TOOLKIT_HEADS_PATH or the shipped ones)."),
) -> None:
    """Show the offline model's id, dimension and how its heads were trained: by default the
    model the collection in use was built with (`toolkit reindex`), else the configured one.
    Also the image backbone's precision on this machine and why (on first use here, int8 is
    checked against fp32 first, which takes up to a minute)."""
    from toolkit.training import heads_info

    if heads is None:
        settings = _model_settings()
        if settings.model != "offline":
            typer.echo(f"model: {settings.model} ({settings.clip_model}); heads belong to the offline model: "
                       "pass --heads to describe a heads file")
            return
        heads = settings.heads_path
    else:
        settings = _model_settings().model_copy(update={"heads_path": heads, "model": "offline"})
    for key, value in heads_info(heads).items():
        typer.echo(f"{key}: {value}")
    if settings.model == "offline":
        _print_precision(settings)


def _print_precision(settings: "Settings") -> None:
    """The image backbone's precision on this machine, measured now if it never was (once)."""
    from toolkit import registry
    from toolkit.ground.machine import describe

    choice = registry.embedder(settings).precision_choice()
    typer.echo(f"precision: {choice.precision} (TOOLKIT_PRECISION={settings.precision}): {choice.reason}")
    typer.echo(f"machine: {describe(choice.machine)}")


def _model_settings() -> "Settings":
    """The settings of the model in use: the one recorded for the collection in use when the
    store exists (an info command does not create one), else the configured one."""
    from store.chroma import embedded_path
    from toolkit.core import Toolkit
    from toolkit.ground.settings import load_settings

    settings = load_settings()
    path = embedded_path(settings)
    if path is not None and not path.is_dir():
        return settings
    return Toolkit(settings).model_settings
