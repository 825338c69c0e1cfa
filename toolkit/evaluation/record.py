"""What `toolkit eval` reports: the `EvalReport` record, printed, written to eval.json and drawn in eval.html.

Metric names (the keys of `EvalReport.metrics`, and what `--fail-under` accepts); ATTR is
a labelled column the vocabulary mirrors (articleType, baseColour, gender), or `all` when
a result must match every one of them:

    image.ATTR.p@1 / p@5 / p@10   each photo queries the others: share of its top k with the same label
    text.recall@1 / recall@10     each title queries the photos: share whose own photo is in the top k
    text.mrr                      mean of 1 / rank of the title's own photo
    query.ATTR.p@10               "Men Black Casual Shoes" from the labels (triples held by 2+ photos):
                                  share of the top 10 with each named label
    query.mean.p@10               the mean of the attributes' query.ATTR.p@10
    tags.COLUMN.accuracy          the local tagger's best label (no threshold) equals the catalog's
    tags.COLUMN.coverage          share of photos given a stored tag (confidence over the threshold)
    tags.COLUMN.accuracy@threshold  share of stored tags that are right

`EvalReport.ceilings` holds, for the image and query metrics, the best figure any ranking
could reach on these labels: a photo whose label only 3 others share scores at most 3/5 at
p@5, and a query whose every label only 3 photos share at most 0.3 for `all`. query.ATTR's
ceiling is that attribute's alone; query.mean's is that of all of them at once, since a top 10
filled with one attribute's matches can crowd out another's.

`EvalReport.margins` holds, for every metric, the half-width of its 95% interval: each figure
is a mean over the photos, titles or queries scored, and as many other photos of the same
catalog would give a figure within about that much of it. A `--fail-under` gate set closer
than that to a model's figure fails by chance now and then (`narrow_gates` names such gates).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalReport:
    """Everything `toolkit eval` prints, writes to eval.json and draws in eval.html. JSON-able."""

    model_id: str
    split: str
    items: int
    metrics: dict[str, float]
    attributes: list[str]
    skipped: list[str] = field(default_factory=list)
    attribute_queries: int = 0
    #: metric name -> the best any ranking could score on these labels (image.* and query.*)
    ceilings: dict[str, float] = field(default_factory=dict)
    #: metric name -> half-width of its 95% interval over the photos or queries scored
    margins: dict[str, float] = field(default_factory=dict)
    #: metric name -> each photo's (or query's) own score, whose mean the metric is: what a
    #: comparison with another model's run pairs up (toolkit/evaluation/compare.py). Not in eval.json.
    per_item: dict[str, dict[str, float]] = field(default_factory=dict)
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The machine and precision the figures were measured with (`measured_on`): figures from
    #: two machines are never compared blind.
    measured_on: dict[str, object] = field(default_factory=dict)
    tags: dict[str, dict] = field(default_factory=dict)
    map: dict[str, list] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    #: The worst article types and colours by image-to-image p@5, each with one of its photos
    #: and that photo's top 5: what the model gets wrong, to look at.
    failures: list[dict] = field(default_factory=list)
    #: With `--mapping`: what the mapping made of the catalog (toolkit/evaluation/mapping.py).
    mapping: dict = field(default_factory=dict)
    seconds: float = 0.0
