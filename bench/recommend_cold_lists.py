"""Lists for shoppers with no history, beyond those `toolkit recommend eval` scores: every shopper of a
week scored as if new, on three sets of weeks of the H&M sample, against 7- and 30-day popularity.

    python bench/recommend_cold_lists.py      # a table per set of weeks; bench/results/recommend-cold-lists.json

Lists: top sellers over 7 to 60 days; decayed top sellers (window, half-life), also counting each
shopper once per article and day ("once"); and an article's decayed sales plus its garment's (the
article's product_code, all colours) times beta / 3 ("garment"). Reads the H&M files directly
(pandas), so it runs in about a minute and needs no trained models.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from toolkit.recommend.evaluate import ap_at_k, interval  # noqa: E402

HM = Path(os.environ.get("TOOLKIT_HM_DATA", ROOT.parent / "shared" / "data" / "hm"))
K = 12
#: (name, weeks before the last that the set ends, how many weeks): the reported 8 and those before them.
SETS = (("tuning (4 weeks before the reported)", 8, 4), ("reported (8 weeks)", 0, 8), ("earlier (16 weeks)", 12, 16))
DECAYS = ((30, 7), (30, 14), (60, 14), (60, 30), (90, 30), (14, 3), (30, 3))


def decayed(train: pd.DataFrame, cutoff, window: int, half: float, key: str = "article_id",
            once: bool = False) -> pd.Series:
    recent = train[train.t_dat >= cutoff - timedelta(days=window)]
    if once:
        recent = recent.drop_duplicates(["customer_id", key, "t_dat"])
    weight = 0.5 ** (((cutoff - recent.t_dat).dt.days.to_numpy() + 0.5) / half)
    return pd.Series(weight, index=recent[key].to_numpy()).groupby(level=0).sum()


def top(scores: pd.Series) -> list[str]:
    return scores.sort_values(ascending=False, kind="stable").index[:K].tolist()


def lists(train: pd.DataFrame, cutoff, garment: dict[str, str]) -> dict[str, list[str]]:
    out = {f"popularity, {d} days": top(train[train.t_dat >= cutoff - timedelta(days=d)].groupby("article_id").size())
           for d in (7, 14, 30, 60)}
    for window, half in DECAYS:
        own = decayed(train, cutoff, window, half)
        out[f"decayed {window} d, half-life {half} d"] = top(own)
        out[f"decayed {window} d, half-life {half} d, once"] = top(decayed(train, cutoff, window, half, once=True))
        pooled = decayed(train, cutoff, window, half, key="code")
        codes = pd.Series(own.index.map(garment), index=own.index).map(pooled).fillna(0).to_numpy()
        for beta in (0.3, 1.0):
            out[f"decayed {window} d, half-life {half} d, garment x{beta:g}"] = top(own + beta * codes / 3)
    return out


def score_set(tx: pd.DataFrame, end, skip: int, weeks: int, garment: dict[str, str]) -> dict[str, np.ndarray]:
    per: dict[str, list[float]] = {}
    for w in range(skip + weeks, skip, -1):
        cutoff = end - timedelta(days=7 * w)
        test = tx[(tx.t_dat >= cutoff) & (tx.t_dat < cutoff + timedelta(days=7))]
        ranked = lists(tx[tx.t_dat < cutoff], cutoff, garment)
        for _, bought in test.groupby("customer_id").article_id.agg(set).items():
            for name, items in ranked.items():
                per.setdefault(name, []).append(ap_at_k(items, bought, K)[0])
    return {name: np.asarray(v) for name, v in per.items()}


def main() -> None:
    tx = pd.read_csv(HM / "transactions.csv", dtype={"article_id": str, "customer_id": str}, parse_dates=["t_dat"])
    articles = pd.read_csv(HM / "articles.csv", dtype={"article_id": str, "product_code": str})
    garment = dict(zip(articles.article_id, articles.product_code))
    tx["code"] = tx.article_id.map(garment)
    end = tx.t_dat.max().normalize() + timedelta(days=1)
    rng = np.random.default_rng(0)
    result = {}
    for label, skip, weeks in SETS:
        per = score_set(tx, end, skip, weeks, garment)
        base = max(("popularity, 7 days", "popularity, 30 days"), key=lambda m: per[m].mean())
        n = len(per[base])
        rows = {}
        print(f"\n{label}: {n} shopper-weeks; margin against {base} (MAP@12 {per[base].mean():.4f}), paired, 95%")
        for name, v in sorted(per.items(), key=lambda kv: -kv[1].mean()):
            margin = interval(v - per[base], rng)
            rows[name] = {"map": round(float(v.mean()), 5), "margin": round(margin.mean, 5),
                          "low": round(margin.low, 5), "high": round(margin.high, 5)}
            print(f"  {name:<44} {v.mean():.4f}  {margin.mean:+.4f} [{margin.low:+.4f}, {margin.high:+.4f}]")
        result[label] = {"shopper_weeks": n, "baseline": base, "lists": rows}
    out = ROOT / "bench" / "results" / "recommend-cold-lists.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
