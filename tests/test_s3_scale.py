"""2,000 real photos in a bucket on the local S3 server, tagged with the shipped model, then again."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.helpers import REPO, read_styles
from toolkit.faces.commands.output import to_jsonable
from toolkit import Toolkit
from toolkit.ground.settings import load_settings

N = 2000
ARTIFACT = REPO / "tests" / "artifacts" / "s3_scale.json"


@pytest.fixture(scope="module")
def bucket(s3_server, shared_data):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="scale")
    rows = read_styles(shared_data)[:N]

    def put(r):
        s3.put_object(Bucket="scale", Key=f"catalog/{r['id']}.jpg",
                      Body=(shared_data / "images" / f"{r['id']}.jpg").read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, rows))
    return "s3://scale/catalog/"


@pytest.fixture(scope="module")
def tagged(bucket, s3_server, tmp_path_factory):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("scale"), s3_endpoint_url=s3_server)
    tk = Toolkit(settings)
    first = tk.tag(bucket)
    second = tk.tag(bucket)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps({"first": to_jsonable(first), "second": to_jsonable(second),
                                    "store_count": tk.store.count()}, indent=2))
    return tk, first, second


@pytest.mark.slow
def test_second_run_processes_nothing_and_store_holds_exactly_n(tagged):
    tk, first, second = tagged
    assert (first.new, len(first.skipped), len(first.failed)) == (N, 0, 0)
    assert (second.new, second.updated, second.unchanged) == (0, 0, N)
    assert second.records_written == 0
    assert tk.store.count() == N
    stats = tk.stats()
    assert (stats.images, stats.videos, stats.media) == (N, 0, N)


@pytest.mark.slow
def test_hnsw_recall_at_10_against_exact_search(tagged):
    tk, _, _ = tagged
    records = tk.store.get(include_embeddings=True)
    ids = np.array([r.id for r in records])
    vecs = np.stack([r.embedding for r in records])
    rng = np.random.default_rng(0)
    queries = rng.choice(len(ids), size=200, replace=False)
    recalls = []
    for q in queries:
        exact = set(ids[np.argsort(-(vecs @ vecs[q]))[:10]])
        approx = {m.id for m in tk.store.query(vecs[q], 10)}
        recalls.append(len(exact & approx) / 10)
    assert float(np.mean(recalls)) >= 0.95
