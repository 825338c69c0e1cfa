"""The tag pipeline: bad items skipped with reasons, re-runs idempotent, changes replace, runs resume."""
from __future__ import annotations

import shutil

import pytest

from tests.helpers import ColourEmbedder, copy_photos, read_styles, write_mp4, write_products_csv
from toolkit import Toolkit

PHOTOS = 24


@pytest.fixture
def photo_rows(shared_data):
    return read_styles(shared_data)[:PHOTOS]


@pytest.fixture
def source(tmp_path, shared_data, photo_rows):
    """A folder of real photos, one video and the four kinds of bad input the issue names."""
    root = tmp_path / "media"
    copy_photos(shared_data, photo_rows, root / "photos")
    jpg = (shared_data / "images" / f"{photo_rows[0]['id']}.jpg").read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "bad" / "empty.jpg").write_bytes(b"")
    (root / "bad" / "readme.jpg").write_text("not a photo at all\n")
    clip = write_mp4()
    (root / "bad" / "truncated.mp4").write_bytes(clip[: len(clip) // 3])
    (root / "video").mkdir()
    write_mp4(root / "video" / "lookbook.mp4", seconds_each=2.0)
    return root


@pytest.fixture
def tk(settings):
    return Toolkit(settings, embedder=ColourEmbedder())


def skipped_reasons(report) -> dict[str, str]:
    return {f.uri.rsplit("/", 1)[-1]: f.reason for f in report.skipped}


def test_bad_items_are_skipped_with_reasons_and_the_rest_indexed(tk, source):
    report = tk.tag(str(source), tagger="local")
    reasons = skipped_reasons(report)
    assert set(reasons) == {"corrupt.jpg", "empty.jpg", "readme.jpg", "truncated.mp4"}
    assert "corrupt or unsupported image" in reasons["corrupt.jpg"]
    assert "empty file (0 bytes)" in reasons["empty.jpg"]
    assert "not an image or a video" in reasons["readme.jpg"]
    assert "unreadable or truncated video" in reasons["truncated.mp4"]
    assert report.new == PHOTOS + 1 and report.failed == []
    stats = tk.stats()
    assert (stats.images, stats.videos) == (PHOTOS, 1)
    assert stats.records == PHOTOS + stats.frames and stats.frames == 3


def test_second_run_reads_and_embeds_nothing(tk, source):
    first = tk.tag(str(source), tagger="local")
    embedded = tk.embedder.images_embedded
    count = tk.store.count()
    second = tk.tag(str(source), tagger="local")
    assert (second.new, second.updated, second.unchanged) == (0, 0, first.new)
    assert tk.embedder.images_embedded == embedded and tk.store.count() == count


def test_changed_file_replaces_its_records(tk, source, shared_data, photo_rows):
    tk.tag(str(source), tagger="local")
    target = source / "photos" / f"{photo_rows[0]['id']}.jpg"
    shutil.copy(shared_data / "images" / f"{photo_rows[-1]['id']}.jpg", target)
    before = tk.store.count()
    report = tk.tag(str(source), tagger="local")
    assert (report.new, report.updated) == (0, 1)
    assert tk.store.count() == before
    shas = {m["sha256"] for _, m in tk.store.iter_metadata(where={"uri": target.as_uri()})}
    import hashlib

    assert shas == {hashlib.sha256(target.read_bytes()).hexdigest()}


def test_touched_but_identical_file_is_unchanged(tk, source, photo_rows):
    import os

    tk.tag(str(source), tagger="local")
    target = source / "photos" / f"{photo_rows[1]['id']}.jpg"
    os.utime(target, (1_000_000, 1_000_000))
    report = tk.tag(str(source), tagger="local")
    assert (report.new, report.updated, report.unchanged) == (0, 0, PHOTOS + 1)


def test_an_interrupted_run_resumes_where_it_stopped(tk, source):
    seen = []

    def stop_midway(ref, status, reason):
        seen.append(ref)
        if len(seen) == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tk.tag(str(source), tagger="local", on_item=stop_midway)
    stored = {m["media_id"] for _, m in tk.store.iter_metadata()}
    assert stored, "the first chunk was written before the interruption"
    report = tk.tag(str(source), tagger="local")
    assert report.unchanged == len(stored)
    assert report.new == PHOTOS + 1 - len(stored)
    assert tk.stats().media == PHOTOS + 1


def test_video_frames_are_records_with_timestamps(tk, source):
    tk.tag(str(source), tagger="local")
    frames = sorted(m["timestamp"] for _, m in tk.store.iter_metadata(where={"kind": "video"}))
    assert frames == pytest.approx([0.0, 2.0, 4.0], abs=0.15)
    # A blue query lands on the blue scene's moment.
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 30, 200)).save(buf, format="PNG")
    hits = tk.search(image=buf.getvalue(), k=1, where=["kind=video"])
    assert hits[0].kind == "video" and hits[0].timestamp == pytest.approx(4.0, abs=0.15)


def test_catalog_links_before_or_after_tagging(tk, source, photo_rows, tmp_path):
    half = len(photo_rows) // 2
    csv_a = write_products_csv(tmp_path / "a.csv", photo_rows[:half], media_for=lambda r: f"photos/{r['id']}.jpg")
    tk.import_catalog(csv_a)                       # before: linked as items are tagged
    tk.tag(str(source), tagger="local")
    csv_b = write_products_csv(tmp_path / "b.csv", photo_rows[half:])  # after: bare file names
    report = tk.import_catalog(csv_b)
    assert report.media_linked == len(photo_rows) - half
    linked = {m["product_id"]: m for _, m in tk.store.iter_metadata() if m.get("product_id")}
    assert len(linked) == len(photo_rows)
    r0 = photo_rows[0]
    meta = linked[f"P{r0['id']}"]
    assert meta["title"] == r0["productDisplayName"]
    assert meta["url"] == f"https://shop.example.com/p/{r0['id']}"
    assert meta["attr_articleType"] == r0["articleType"]
    # Re-importing updates in place.
    again = tk.import_catalog(csv_b)
    assert (again.new, again.updated) == (0, len(photo_rows) - half)
    assert tk.products_store.count() == len(photo_rows)


def test_bare_media_is_found_without_a_catalog_row(tk, source, shared_data, photo_rows):
    tk.tag(str(source), tagger="local")
    hit = tk.search(image=shared_data / "images" / f"{photo_rows[3]['id']}.jpg", k=1)[0]
    assert hit.product_id is None and hit.title is None
    assert hit.media_uri.endswith(f"/{photo_rows[3]['id']}.jpg") and hit.score == pytest.approx(1.0, abs=1e-3)


def test_items_a_tagger_gave_no_label_are_not_tagged_again(source, tmp_path):
    """A threshold no label reaches: the local tagger still looked at every item, so a second
    run must not read or embed any of them again."""
    from toolkit.ground.settings import load_settings

    tk = Toolkit(load_settings(data_dir=tmp_path / "strict", tag_threshold=1.0), embedder=ColourEmbedder())
    first = tk.tag(str(source), tagger="local")
    assert first.new == PHOTOS + 1
    assert all(not m.get("tags") and m["providers"] == ["local"] for _, m in tk.store.iter_metadata())
    embedded = tk.embedder.images_embedded
    second = tk.tag(str(source), tagger="local")
    assert (second.new, second.updated, second.unchanged) == (0, 0, PHOTOS + 1)
    assert tk.embedder.images_embedded == embedded


def test_retagging_keeps_the_frame_tags_of_taggers_not_run_now(tmp_path):
    """`tag --retag --tagger local` on a video a cloud had tagged frame by frame: the cloud's
    media and frame tags are kept (the one merge step tag and reindex share carries both)."""
    import json

    import numpy as np

    from store.base import Record
    from toolkit.ground.models import Tag
    from toolkit.ground.settings import load_settings
    from toolkit.records import stored_frame_tags, tag_to_dict

    (tmp_path / "media").mkdir()
    write_mp4(tmp_path / "media" / "lookbook.mp4", seconds_each=2.0)
    tk = Toolkit(load_settings(data_dir=tmp_path / "data"), embedder=ColourEmbedder())
    assert tk.tag(str(tmp_path / "media"), tagger="local").new == 1
    cloud = {}
    for rec in tk.store.get():
        frame = rec.metadata["frame"]
        cloud[frame] = Tag(group="scene", label=f"shot {frame}", confidence=0.9, provider="gcp", start=float(frame))
        meta = {**rec.metadata, "providers": ["gcp", "local"],
                "frame_tags_json": json.dumps([tag_to_dict(cloud[frame])])}
        tk.store.replace_metadata([Record(rec.id, np.empty(0), meta)])

    changed = Toolkit(load_settings(data_dir=tmp_path / "data", tag_threshold=0.2), embedder=ColourEmbedder())
    assert changed.tag(str(tmp_path / "media"), tagger="local", retag=True).retagged == 1
    records = changed.store.get()
    assert len(records) == len(cloud) == 3
    for rec in records:
        assert rec.metadata["providers"] == ["gcp", "local"]
        kept = [t for t in stored_frame_tags(rec.metadata) if t.provider == "gcp"]
        assert kept == [cloud[rec.metadata["frame"]]]
