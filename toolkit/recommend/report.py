"""`recommend-eval/eval.html`: the evaluation as one self-contained page, in the style of `toolkit eval`'s."""
from __future__ import annotations

from html import escape
from pathlib import Path

from toolkit.report_style import CSS
from toolkit.recommend.evaluate import EvalReport, Interval


def write_html(report: EvalReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report), encoding="utf-8")
    return path


def _ci(i: Interval | None) -> str:
    return "" if i is None else f"{i.mean:.4f} <small>[{i.low:.4f}, {i.high:.4f}]</small>"


def render(report: EvalReport) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>toolkit recommend eval</title><style>{CSS}</style>",
             f"<h1>Recommendations: {len(report.weeks)} rolling weeks, k={report.k}</h1>",
             "<p>Train before each week, score the shoppers who bought in it. 95% bootstrap intervals; the margin "
             "is the paired difference from the group's best baseline (green: its interval is above 0; red: below).</p>"]
    group = None
    for s in report.scores:
        if s.group != group:
            if group is not None:
                parts.append("</table>")
            group = s.group
            metric = "HR@10" if group == "baskets" else f"MAP@{report.k}"
            parts.append(f"<h2>{escape(group)} ({s.n})</h2><table class='m'><tr><th>method</th><th>{metric}</th>"
                         "<th>HR</th><th>recall</th><th>margin</th><th>coverage</th><th>hits never bought</th></tr>")
        main = s.hr if group == "baskets" else s.map
        cls = "better" if s.margin and s.margin.low > 0 else "worse" if s.margin and s.margin.high < 0 else ""
        never = "" if s.never_bought_share is None else f"{s.never_bought_share:.3f}"
        parts.append(f"<tr class='{cls}'><td>{escape(s.method.strip())}{' (baseline)' if s.baseline else ''}</td>"
                     f"<td class='v'>{_ci(main)}</td><td class='v'>{'' if group == 'baskets' else _ci(s.hr)}</td>"
                     f"<td class='v'>{_ci(s.recall)}</td><td class='v'>{_ci(s.margin)}</td>"
                     f"<td class='v'>{s.coverage:.3f}</td><td class='v'>{never}</td></tr>")
    parts.append("</table><h2>Weeks</h2><table class='m'><tr><th>from</th><th>shoppers</th><th>new shoppers</th>"
                 "<th>baskets</th></tr>")
    for w in report.weeks:
        parts.append(f"<tr><td>{w.start}</td><td class='v'>{w.users}</td><td class='v'>{w.new_users}</td>"
                     f"<td class='v'>{w.baskets}</td></tr>")
    parts.append(f"</table><p>{report.seconds:.0f} s; catalog of {report.catalog} items.</p>")
    return "\n".join(parts)
