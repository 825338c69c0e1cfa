"""`toolkit events`, `toolkit users` and `toolkit recommend`: import what shoppers do, and recommend from it."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from toolkit.faces.commands.output import err, out, print_json, to_jsonable
from toolkit.ground.errors import QueryError

events_app = typer.Typer(help="Shoppers' events (purchases, carts, views) and the items they name.", no_args_is_help=True)
users_app = typer.Typer(help="Shoppers' attributes (age, gender, ...) for recommending to new shoppers.",
                        no_args_is_help=True)
recommend_app = typer.Typer(help="Recommendations: bought together, picked for a shopper, trending.", no_args_is_help=True)

SHOWN_PROBLEMS = 20


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
    app.add_typer(users_app, name="users")
    app.add_typer(recommend_app, name="recommend")


def _recommender():
    from toolkit.core import Toolkit

    return Toolkit().recommend


def _mapping(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise QueryError(f"--map {pair!r} is not of the form field=column, e.g. --map user_id=customer_id")
        mapping[field.strip()] = column.strip()
    return mapping


def _report(report, as_json: bool, what: str) -> None:
    if as_json:
        print_json(report)
    else:
        err.print(f"{report.source}: {report.rows} rows, {report.added} {what} added, "
                  f"{report.already_stored} already stored, {len(report.merged)} repeated rows merged, "
                  f"{len(report.bad)} bad rows", highlight=False, soft_wrap=True)
        # Repeats are normal (two of one article as two rows): a few are shown, every bad row up to a limit.
        for label, problems, shown in (("bad", report.bad, SHOWN_PROBLEMS), ("repeated", report.merged, 3)):
            for p in problems[:shown]:
                err.print(f"  {label} line {p.line}: {p.reason}", highlight=False, soft_wrap=True)
            if len(problems) > shown:
                err.print(f"  ... and {len(problems) - shown} more {label} rows (--json lists them all)",
                          highlight=False)
        if report.unknown_items:
            err.print(f"  {report.unknown_items} events name products the items table lacks "
                      f"(e.g. {', '.join(report.unknown_examples)}): kept; import them with `toolkit events items`",
                      highlight=False, soft_wrap=True)
        for note in report.notes:
            err.print(f"  {note}", highlight=False, soft_wrap=True)
    if report.bad:
        raise typer.Exit(1)


@events_app.command("import")
def events_import(
    file: str = typer.Argument(..., help="CSV or Parquet file, local or s3://bucket/key."),
    map_: list[str] = typer.Option([], "--map", help="field=column, repeatable: user_id, item_id, ts, event_type, "
                                                    "basket_id, quantity, price (e.g. --map ts=t_dat)."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Import events from FILE. Importing the same file again adds nothing; each bad row is named with
    its line and reason (exit 1), and every good row is kept.

    Known column names: user_id (customer_id), item_id (product_id, article_id), timestamp (ts, t_dat),
    event_type (view, cart, purchase; purchase when absent), basket_id (order_id), quantity, price.
    """
    _report(_recommender().import_events(file, _mapping(map_)), as_json, "events")


@events_app.command("items")
def events_items(
    file: str = typer.Argument(..., help="CSV or Parquet file with product_id (or article_id) and attributes."),
    id_column: Optional[str] = typer.Option(None, "--id", help="The column that holds the product id."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Import the products events name: title, price, url, image and attributes (facets for trending,
    product_code for leaving out other colours). Importing again updates them."""
    _report(_recommender().import_items(file, id_column), as_json, "items")


@users_app.command("import")
def users_import(
    file: str = typer.Argument(..., help="CSV or Parquet file with user_id (or customer_id) and attributes."),
    id_column: Optional[str] = typer.Option(None, "--id", help="The column that holds the user id."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Import shoppers' attributes (age, gender, anything else). Age band and gender make the segments
    new shoppers get trending picks from. Importing again updates them."""
    _report(_recommender().import_users(file, id_column), as_json, "users")


@recommend_app.command("rules")
def rules(
    min_support: float = typer.Option(0.01, "--min-support", help="Least share of baskets holding the whole rule."),
    min_confidence: float = typer.Option(0.3, "--min-confidence", help="Least P(consequent | antecedent)."),
    min_lift: Optional[float] = typer.Option(None, "--min-lift", help="Least lift."),
    max_len: Optional[int] = typer.Option(None, "--max-len", help="Most items in a rule."),
    algorithm: str = typer.Option("fpgrowth", "--algorithm", help="fpgrowth or apriori (mlxtend's)."),
    as_json: bool = typer.Option(False, "--json", help="Print rules as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print rules as CSV."),
) -> None:
    """Association rules over the baskets (an order id, else one shopper's purchases in a day): antecedents,
    consequents, support, confidence, lift, best first."""
    if algorithm not in ("fpgrowth", "apriori"):
        raise QueryError(f"--algorithm {algorithm!r}: choose fpgrowth or apriori")
    found = _recommender().rules(min_support, min_confidence, min_lift, max_len, algorithm)
    if as_json:
        print_json(found)
    elif as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["antecedents", "consequents", "support", "confidence", "lift"])
        for r in found:
            writer.writerow([";".join(r.antecedents), ";".join(r.consequents), f"{r.support:.6g}",
                             f"{r.confidence:.6g}", f"{r.lift:.6g}"])
    elif not found:
        out.print("no rules at these thresholds; lower --min-support or --min-confidence")
    else:
        out.print(f"{'antecedents':<24} {'consequents':<24} {'support':>9} {'confidence':>10} {'lift':>8}")
        for r in found:
            out.print(f"{', '.join(r.antecedents):<24} {', '.join(r.consequents):<24} {r.support:>9.5f} "
                      f"{r.confidence:>10.3f} {r.lift:>8.1f}", highlight=False)


def _picks(result, as_json: bool) -> None:
    if as_json:
        print_json({"picks": [p.as_dict() for p in result.picks], "note": result.note})
        return
    if result.note:
        err.print(result.note, highlight=False, soft_wrap=True)
    if not result.picks:
        out.print("no recommendations")
    for n, p in enumerate(result.picks, 1):
        price = f"  {p.price:g} {p.currency or ''}".rstrip() if p.price is not None else ""
        out.print(f"[bold]{n:>2}.[/] {p.score:.3f}  {p.product_id}  {p.title or '(no item entry)'}{price}",
                  highlight=False, soft_wrap=True)
        out.print(f"     why:   {p.reason}", highlight=False, soft_wrap=True)
        if p.url:
            out.print(f"     buy:   {p.url}", highlight=False, soft_wrap=True)


_K = typer.Option(10, "-k", help="How many products to return.")
_WHERE = typer.Option([], "--where", "-w", help="Filter, repeatable: price<50, index_group_name=Ladieswear.")
_MIN = typer.Option(None, "--min-score", help="Drop results scoring under this.")
_JSON = typer.Option(False, "--json", help="Print results as JSON.")


@recommend_app.command("together")
def together(product: str = typer.Argument(..., help="A product id."), k: int = _K, where: list[str] = _WHERE,
             min_score: Optional[float] = _MIN, as_json: bool = _JSON) -> None:
    """Products bought together with PRODUCT, with each rule's confidence and lift; its other colours
    (same product_code) are left out."""
    _picks(_recommender().together(product, k=k, where=where, min_score=min_score), as_json)


@recommend_app.command("user")
def user(user_id: str = typer.Argument(..., help="A user id from the events."), k: int = typer.Option(12, "-k"),
         where: list[str] = _WHERE, min_score: Optional[float] = _MIN,
         buy_again: bool = typer.Option(True, "--buy-again/--no-buy-again",
                                        help="Whether products the user bought may come back."),
         as_json: bool = _JSON) -> None:
    """Picks for USER_ID: their purchases again, what shoppers like them bought, other colours, trending.
    A user with no events gets trending in their segment (users import) or overall."""
    _picks(_recommender().for_user(user_id, k=k, where=where, min_score=min_score, buy_again=buy_again), as_json)


@recommend_app.command("trending")
def trending(k: int = typer.Option(12, "-k"),
             facet: list[str] = typer.Option([], "--facet", help="attribute=value, e.g. index_group_name=Ladieswear."),
             segment: Optional[str] = typer.Option(None, "--segment", help="A users' segment, e.g. 'age 25-34'."),
             where: list[str] = _WHERE, as_json: bool = _JSON) -> None:
    """Top sellers of the last 30 days, each purchase counting half as much every 7 days."""
    _picks(_recommender().trending(k=k, facet=_mapping(facet) or None, segment_name=segment, where=where), as_json)


@recommend_app.command("train")
def train(as_json: bool = _JSON) -> None:
    """Build every model from the events (CF, bought together, trending) and keep it beside them;
    serving reads it and retrains nothing."""
    report = _recommender().train(on_step=lambda name, s: err.print(f"  {name}: {s:.1f} s", highlight=False))
    if as_json:
        print_json(report)
    else:
        built_for = f" for collection '{report.catalog['collection']}'" if report.catalog else ""
        err.print(f"trained on {report.events} events ({report.users} users, {report.items} items){built_for} in "
                  f"{report.seconds:.1f} s -> {report.path}", highlight=False, soft_wrap=True)


@recommend_app.command("eval")
def eval_(weeks: int = typer.Option(8, "--weeks", help="Rolling test weeks, the latest last."),
          k: int = typer.Option(12, "-k", help="Cut-off of MAP, HR and recall."),
          out_dir: Path = typer.Option(Path("recommend-eval"), "--out", help="Folder for eval.json and eval.html."),
          as_json: bool = _JSON) -> None:
    """Train before each weekly cutoff and score the week after: MAP@k, HR@k, recall@k with 95% intervals,
    against popularity and repurchase baselines, with an ablation of the blend; basket completion HR@10.
    Writes OUT/eval.json and OUT/eval.html."""
    from toolkit.recommend.report import write_html

    report = _recommender().evaluate(weeks=weeks, k=k, progress=lambda m: err.print(m, highlight=False))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(to_jsonable(report), indent=2))
    write_html(report, out_dir / "eval.html")
    err.print(f"wrote {out_dir / 'eval.json'} and {out_dir / 'eval.html'}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(report)
        return
    out.print(format_eval(report), highlight=False, soft_wrap=True)


def format_eval(report) -> str:
    def ci(i) -> str:
        return f"{i.mean:.4f} [{i.low:.4f}, {i.high:.4f}]" if i else "-"

    lines = [f"{len(report.weeks)} weeks from {report.weeks[0].start if report.weeks else '-'}, "
             f"k={report.k}, {report.seconds:.0f} s"]
    group = None
    for s in report.scores:
        if s.group != group:
            group = s.group
            metric = "HR@10" if group == "baskets" else f"MAP@{report.k}"
            lines.append(f"\n{group}  ({s.n} {'baskets' if group == 'baskets' else 'shopper-weeks'})")
            lines.append(f"  {'method':<48} {metric:<26} {'HR':<26} {'margin vs best baseline':<28} coverage")
        main = s.hr if group == "baskets" else s.map
        hr = "" if group == "baskets" else ci(s.hr)
        lines.append(f"  {s.method:<48} {ci(main):<26} {hr:<26} {ci(s.margin) if s.margin else '(baseline)':<28} "
                     f"{s.coverage:.3f}")
    return "\n".join(lines)
