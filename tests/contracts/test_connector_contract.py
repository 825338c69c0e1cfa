"""What every connector promises (connectors/base.py), checked on each backend: a local folder,
and a bucket on moto's S3 server through the real boto3 client.

Each backend gets the same tree of objects through `Backend.put`, and its source URI; what is
particular to one backend (hidden files, pages, S3 URIs) stays in tests/test_connectors.py.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import pytest

from connectors.base import Connector
from toolkit.ground.errors import MediaError, SourceError
from toolkit.ground.models import MediaRef

#: Nested folders, a zero-byte object and a file that is not media: a connector lists every
#: object (deciding what is media is the decoder's part), keyed relative to the source.
TREE = {"a.jpg": b"A", "empty.jpg": b"", "notes.txt": b"not media", "shoes/b.jpg": b"BB",
        "shoes/men/c.mp4": b"CCC"}


@dataclass
class Backend:
    name: str
    connector: Connector
    source: str                             #: the URI the tree lies under
    put: Callable[[str, bytes], None]       #: write one object at a key relative to the source
    remove: Callable[[str], None]
    uri_of: Callable[[str], str]            #: the URI a key is listed under
    missing: str                            #: a source that does not exist
    missing_says: str                       #: what the error for it says


def local_backend(tmp_path) -> Backend:
    from connectors.local import LocalConnector

    root = tmp_path / "media"
    root.mkdir()

    def put(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        path.write_bytes(data)
        if existed:  # a rewrite happens later in real life: a coarse clock must not hide it
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    return Backend("local", LocalConnector(), str(root), put, lambda key: (root / key).unlink(),
                   lambda key: (root / key).as_uri(), str(tmp_path / "nope"), "no such folder")


def s3_backend(request, tmp_path) -> Backend:
    from connectors.s3 import S3Connector

    s3_server, s3 = request.getfixturevalue("s3_server"), request.getfixturevalue("s3")
    bucket = f"contract-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    s3.create_bucket(Bucket=bucket)
    prefix = "catalog/2024/"
    return Backend("s3", S3Connector(endpoint_url=s3_server), f"s3://{bucket}/{prefix}",
                   lambda key, data: s3.put_object(Bucket=bucket, Key=prefix + key, Body=data),
                   lambda key: s3.delete_object(Bucket=bucket, Key=prefix + key),
                   lambda key: f"s3://{bucket}/{prefix}{key}", "s3://does-not-exist/x/", "no such bucket")


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    made = local_backend(tmp_path) if request.param == "local" else s3_backend(request, tmp_path)
    for key, data in TREE.items():
        made.put(key, data)
    return made


def listed(backend: Backend) -> dict[str, MediaRef]:
    return {r.key: r for r in backend.connector.list(backend.source)}


def test_is_a_connector_for_its_scheme(backend):
    assert isinstance(backend.connector, Connector)
    scheme = backend.source.split("://")[0] if "://" in backend.source else "file"
    assert scheme in backend.connector.schemes
    backend.connector.check(backend.source)  # an existing source passes the early check


def test_lists_every_object_lazily_with_keys_relative_to_the_source(backend):
    refs = backend.connector.list(backend.source)
    assert isinstance(refs, Iterator)  # lazily: never the whole listing in memory
    refs = list(refs)
    assert [r.key for r in refs] == sorted(TREE)  # nested folders too, in a stable order
    assert all(r.uri == backend.uri_of(r.key) for r in refs)


def test_reads_each_objects_bytes_the_zero_byte_one_too(backend):
    refs = listed(backend)
    assert {key: backend.connector.read(ref) for key, ref in refs.items()} == TREE
    assert refs["empty.jpg"].size == 0 and backend.connector.read(refs["empty.jpg"]) == b""


def test_size_and_fingerprint_tell_a_change_without_a_download(backend):
    before = listed(backend)
    assert all(before[key].size == len(data) for key, data in TREE.items())
    assert all(r.fingerprint for r in before.values())  # ETag, or size and mtime
    backend.put("a.jpg", b"Z")  # same size, new bytes
    after = listed(backend)
    assert after["a.jpg"].fingerprint != before["a.jpg"].fingerprint
    assert {k: r.fingerprint for k, r in after.items() if k != "a.jpg"} == {
        k: r.fingerprint for k, r in before.items() if k != "a.jpg"}


def test_a_missing_source_says_so_before_and_while_listing(backend):
    with pytest.raises(SourceError, match=backend.missing_says) as early:
        backend.connector.check(backend.missing)
    with pytest.raises(SourceError, match=backend.missing_says):
        list(backend.connector.list(backend.missing))
    assert "\n" not in str(early.value) and backend.missing in str(early.value)


def test_an_object_gone_since_the_listing_is_a_media_error_naming_it(backend):
    ref = listed(backend)["shoes/b.jpg"]
    backend.remove("shoes/b.jpg")
    with pytest.raises(MediaError) as info:
        backend.connector.read(ref)
    assert str(info.value).startswith(f"{ref.uri}: ") and "\n" not in str(info.value)
