"""Connectors list recursively and lazily, in pages for S3, and read one object at a time."""
from __future__ import annotations

import pytest

from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from toolkit.ground.errors import MediaError, SourceError


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "media"
    (root / "shoes" / "men").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.jpg").write_bytes(b"A")
    (root / "shoes" / "b.jpg").write_bytes(b"BB")
    (root / "shoes" / "men" / "c.mp4").write_bytes(b"CCC")
    (root / ".hidden" / "d.jpg").write_bytes(b"D")
    (root / ".DS_Store").write_bytes(b"x")
    return root


def upload_tree(s3, bucket: str, root, prefix: str) -> None:
    s3.create_bucket(Bucket=bucket)
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(p.startswith(".") for p in rel.split("/")):
            s3.put_object(Bucket=bucket, Key=f"{prefix}{rel}", Body=path.read_bytes())


def test_local_lists_recursively_with_keys_relative_to_root(tree):
    refs = list(LocalConnector().list(str(tree)))
    assert [r.key for r in refs] == ["a.jpg", "shoes/b.jpg", "shoes/men/c.mp4"]
    assert refs[1].uri == (tree / "shoes" / "b.jpg").as_uri()
    assert refs[1].size == 2 and refs[1].fingerprint.startswith("2:")
    assert LocalConnector().read(refs[2]) == b"CCC"


def test_local_missing_folder_says_so(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        list(LocalConnector().list(str(tmp_path / "nope")))


def test_s3_and_local_list_the_same_keys_and_bytes(tree, s3, s3_server):
    upload_tree(s3, "same-keys", tree, "catalog/2024/")
    conn = S3Connector(endpoint_url=s3_server)
    s3_refs = list(conn.list("s3://same-keys/catalog/2024/"))
    local_refs = list(LocalConnector().list(str(tree)))
    assert [r.key for r in s3_refs] == [r.key for r in local_refs]
    assert s3_refs[0].uri == "s3://same-keys/catalog/2024/a.jpg"
    assert [conn.read(r) for r in s3_refs] == [LocalConnector().read(r) for r in local_refs]
    assert all(r.fingerprint for r in s3_refs)  # the ETag: change detection without a download


def test_s3_listing_follows_pages(s3, s3_server):
    s3.create_bucket(Bucket="many")
    for i in range(1105):
        s3.put_object(Bucket="many", Key=f"p/{i:05d}.jpg", Body=b"x")
    s3.put_object(Bucket="many", Key="other/skip.jpg", Body=b"x")
    keys = [r.key for r in S3Connector(endpoint_url=s3_server).list("s3://many/p/")]
    assert len(keys) == 1105 and keys[0] == "00000.jpg" and keys[-1] == "01104.jpg"


def test_s3_errors_are_one_line_with_what_to_do(s3, s3_server):
    conn = S3Connector(endpoint_url=s3_server)
    with pytest.raises(SourceError, match="no such bucket"):
        list(conn.list("s3://does-not-exist/x/"))
    s3.create_bucket(Bucket="gone")
    from toolkit.ground.models import MediaRef

    with pytest.raises(MediaError, match="s3://gone/missing.jpg: cannot download"):
        conn.read(MediaRef(uri="s3://gone/missing.jpg", key="missing.jpg"))
    with pytest.raises(SourceError, match="write it as s3://bucket/prefix"):
        list(conn.list("s3:///nobucket"))


def test_s3_reads_take_the_signed_get_and_match_boto3(s3, s3_server):
    """Keys that need escaping, and a missing key: the signed GET reads what boto3 reads, and a
    failure it cannot serve goes to boto3 (its error message) without turning the path off."""
    from toolkit.ground.models import MediaRef

    s3.create_bucket(Bucket="signed")
    keys = ["plain.jpg", "with space/and+plus.jpg", "ünïcode/%25 ~tilde.jpg", "a=b&c.jpg"]
    for i, key in enumerate(keys):
        s3.put_object(Bucket="signed", Key=key, Body=bytes([i]) * (1000 + i))
    conn = S3Connector(endpoint_url=s3_server)
    refs = list(conn.list("s3://signed/"))
    assert sorted(r.key for r in refs) == sorted(keys)
    assert [conn.read(r) for r in refs] == [S3Connector(endpoint_url=s3_server, fast_get=False).read(r) for r in refs]
    with pytest.raises(MediaError, match="NoSuchKey"):
        conn.read(MediaRef(uri="s3://signed/missing.jpg", key="missing.jpg"))
    assert conn._fast is not None and conn._fast._misses == 0 and conn._fast_on


def test_unreachable_endpoint_names_the_setting():
    from toolkit.ground.settings import Settings
    from toolkit import registry

    conn = registry.connector_for("s3://b/p", Settings(s3_endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(SourceError, match="TOOLKIT_S3_ENDPOINT_URL"):
        list(conn.list("s3://b/p"))


def test_unknown_scheme_is_refused(settings):
    from toolkit import registry

    with pytest.raises(SourceError, match="no connector for 'ftp://'"):
        registry.connector_for("ftp://host/x", settings)
