"""`eval.html`: one self-contained file (inline SVG plots, photos as small base64 JPEGs), so it
can be attached to a CI run or mailed without the photos folder."""
from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

from toolkit.evaluation.compare import Comparison
from toolkit.evaluation.record import EvalReport
from toolkit.report_style import CSS

#: Ten distinguishable colours (Tableau 10) for the map's commonest categories; the rest are grey.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
OTHER = "#d0d0d0"
THUMB = 96

def write_html(report: EvalReport, path: Path, comparison: Comparison | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report, comparison), encoding="utf-8")
    return path


def render(report: EvalReport, comparison: Comparison | None = None) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>toolkit eval</title><style>{CSS}</style>",
             f"<h1>Evaluation of {escape(report.model_id)}</h1>",
             f"<p>{report.items} photos ({escape(report.split)} split), {report.attribute_queries} attribute queries, "
             f"{len(report.skipped)} skipped, {report.seconds:.0f} s.</p>",
             f"<p>Measured with the {escape(str(report.measured_on.get('line', 'unrecorded machine')))}.</p>",
             mapping_note(report.mapping),
             "<h2>Metrics</h2>", metrics_table(report.metrics, report.ceilings, report.margins),
             changes_table(comparison) if comparison is not None else "",
             "<h2>Image-to-image precision@5 per category</h2>", bars(report.per_category),
             "<h2>Tag confusion (rows: catalog label, columns: best predicted label)</h2>"]
    parts += [f"<h3>{escape(col)}</h3>" + confusion_svg(t["confusion"]) for col, t in report.tags.items()]
    parts += ["<h2>Embeddings (PCA, coloured by category)</h2>", scatter(report.map),
              "<h2>Example queries (first: the query; green: same category, red: not)</h2>",
              examples(report.examples),
              "<h2>Where it fails: the worst article types and colours by image-to-image precision@5</h2>"
              "<p>Each strip: the label's photo with the lowest precision@5, then its top 5 (green: same label, "
              "red: not; hover for the labels).</p>", failures(report.failures)]
    return "\n".join(parts)


def mapping_note(mapping: dict) -> str:
    """What a --mapping made of the catalog: each mapped column and the vocabulary groups left unscored."""
    if not mapping:
        return ""
    from toolkit.evaluation.mapping import MappingSummary

    lines = MappingSummary(**mapping).lines()
    return f"<p>{escape(lines[0])}</p><ul>" + "".join(f"<li>{escape(x.strip())}</li>" for x in lines[1:]) + "</ul>"


def failures(rows: list[dict]) -> str:
    out = []
    for f in rows:
        q = f["query"]
        imgs = [_img(q, "q")] + [_img(h, "ok" if h["correct"] else "no") for h in f["hits"]]
        out.append(f"<p>{escape(f['column'])} <b>{escape(f['label'])}</b>: precision@5 {f['p@5']:.3f} over "
                   f"{f['n']} photos</p><div class=strip>{''.join(imgs)}</div>")
    return "".join(out) or "<p>No label has enough photos.</p>"


def metrics_table(metrics: dict[str, float], ceilings: dict[str, float] | None = None,
                  margins: dict[str, float] | None = None) -> str:
    """Each metric with its 95% margin and, where the labels bound it, the best any ranking could score."""
    ceilings, margins = ceilings or {}, margins or {}
    rows = "".join(f"<tr><td>{escape(k)}</td><td class=v>{v:.3f}</td>"
                   f"<td class=v>{f'±{margins[k]:.3f}' if k in margins else ''}</td>"
                   f"<td class=v>{f'{ceilings[k]:.3f}' if k in ceilings else ''}</td></tr>" for k, v in metrics.items())
    return ("<table class=m><tr><th>metric</th><th>value</th><th>95% interval</th><th>best possible</th></tr>"
            f"{rows}</table>")


def changes_table(comparison: Comparison) -> str:
    """Each metric's change against the earlier run, worse first, the verdict coloured."""
    order = sorted(comparison.changes, key=lambda c: ({"worse": 0, "better": 1}.get(c.verdict, 2), c.delta))
    rows = "".join(f"<tr class='{c.verdict.split()[0]}'><td>{escape(c.metric)}</td><td class=v>{c.before:.3f}</td>"
                   f"<td class=v>{c.after:.3f}</td><td class=v>{c.delta:+.4f}</td><td class=v>±{c.margin:.4f}</td>"
                   f"<td class=v>{c.n}</td><td>{escape(c.verdict)}</td></tr>" for c in order)
    return (f"<h2>Against {escape(str(comparison.path))} ({escape(comparison.model_id)}), photo by photo</h2>"
            "<table class=m><tr><th>metric</th><th>before</th><th>after</th><th>change</th><th>95% interval</th>"
            f"<th>photos</th><th>verdict</th></tr>{rows}</table>")


def bars(per_category: dict[str, dict[str, float]], width: int = 640, row: int = 18) -> str:
    """Horizontal bars, one per category, value in [0, 1]."""
    if not per_category:
        return "<p>No categories.</p>"
    label_w, bar_w = 180, width - 240
    out = [f"<svg class=bars width={width} height={row * len(per_category) + 4} xmlns='http://www.w3.org/2000/svg'>"]
    for i, (cat, v) in enumerate(per_category.items()):
        y = i * row
        out.append(f"<text x={label_w - 6} y={y + 13} text-anchor=end font-size=12>{escape(cat)} ({v['n']})</text>"
                   f"<rect x={label_w} y={y + 3} width={v['p@5'] * bar_w:.1f} height={row - 6} fill='{PALETTE[0]}'/>"
                   f"<text x={label_w + v['p@5'] * bar_w + 4:.1f} y={y + 13} font-size=11>{v['p@5']:.2f}</text>")
    return "".join(out) + "</svg>"


def confusion_svg(conf: dict, cell: int = 26) -> str:
    """A heatmap of counts; each row shaded by its own share, so rare labels stay readable."""
    labels, columns, m = conf["labels"], conf.get("columns", conf["labels"]), conf["matrix"]
    if not labels:
        return "<p>No labelled photos.</p>"
    left, topm = 150, 110
    w, h = left + cell * len(columns) + 10, topm + cell * len(labels) + 10
    out = [f"<svg class=confusion width={w} height={h} xmlns='http://www.w3.org/2000/svg' font-size=11>"]
    for j, lab in enumerate(columns):
        x = left + j * cell + cell / 2
        out.append(f"<text transform='translate({x:.0f},{topm - 6}) rotate(-55)'>{escape(lab)}</text>")
    for i, lab in enumerate(labels):
        total = max(sum(m[i]), 1)
        y = topm + i * cell
        out.append(f"<text x={left - 6} y={y + cell * 0.65:.0f} text-anchor=end>{escape(lab)}</text>")
        for j, n in enumerate(m[i]):
            shade = n / total
            fill = f"rgba(46,158,68,{shade:.2f})" if i == j else f"rgba(221,51,51,{shade:.2f})"
            out.append(f"<rect x={left + j * cell} y={y} width={cell - 1} height={cell - 1} fill='{fill}' "
                       f"stroke='#eee'><title>{escape(lab)} -> {escape(columns[j])}: {n}</title></rect>")
            if n:
                out.append(f"<text x={left + j * cell + cell / 2:.0f} y={y + cell * 0.65:.0f} "
                           f"text-anchor=middle>{n}</text>")
    return "".join(out) + "</svg>"


def scatter(points: dict[str, list], size: int = 520) -> str:
    xs, ys, labels = points.get("x", []), points.get("y", []), points.get("label", [])
    if not xs:
        return "<p>No embeddings.</p>"
    common = [lab for lab in _by_count(labels) if lab][:len(PALETTE)]
    colour = {lab: PALETTE[i] for i, lab in enumerate(common)}
    sx, sy = _scale(xs, size), _scale(ys, size)
    out = [f"<svg class=map width={size} height={size} xmlns='http://www.w3.org/2000/svg'>"
           f"<rect width={size} height={size} fill='#fcfcfc' stroke='#ddd'/>"]
    # Grey points first, so the coloured ones are drawn on top.
    order = sorted(range(len(xs)), key=lambda i: labels[i] in colour)
    out += [f"<circle cx={sx(xs[i]):.1f} cy={size - sy(ys[i]):.1f} r=2.5 fill='{colour.get(labels[i], OTHER)}'>"
            f"<title>{escape(labels[i] or '?')}</title></circle>" for i in order]
    legend = "".join(f"<span><i style='background:{c}'></i>{escape(lab)}</span>" for lab, c in colour.items())
    return "".join(out) + f"</svg><div class=legend>{legend}<span><i style='background:{OTHER}'></i>other</span></div>"


def _by_count(labels: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    return sorted(counts, key=lambda lab: -counts[lab])


def _scale(values: list[float], size: int, pad: int = 10):
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return lambda v: pad + (v - lo) / span * (size - 2 * pad)


def examples(rows: list[dict]) -> str:
    out = []
    for ex in rows:
        q = ex["query"]
        imgs = [_img(q, "q")] + [_img(h, "ok" if h["correct"] else "no") for h in ex["hits"]]
        out.append(f"<div class=strip>{''.join(imgs)}</div>")
    return "".join(out) or "<p>No examples.</p>"


def _img(pic: dict, cls: str) -> str:
    tip = escape(f"{pic['product_id']} · {pic['category']} · {pic['title']}", quote=True)
    return f"<img class={cls} src='{thumbnail(Path(pic['image']))}' title=\"{tip}\" alt=\"{tip}\">"


def thumbnail(path: Path) -> str:
    """A data: URI of a small JPEG; a photo that cannot be read becomes an empty grey square."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB))
    except OSError:
        im = Image.new("RGB", (THUMB, THUMB), (230, 230, 230))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
