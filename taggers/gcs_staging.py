"""Stage a video in a Cloud Storage bucket so Video Intelligence can read it by gs:// URI.

Videos over the inline request limit cannot be sent as content. With
TOOLKIT_GCP_STAGING_BUCKET set, the tagger uploads them here (Cloud Storage JSON API, one
simple media upload), annotates by URI and deletes the copy afterwards. It needs only
google-auth, which the Video Intelligence client already brings. `STORAGE_EMULATOR_HOST`
(the variable google-cloud-storage honours) points it at a local server instead of Google.
"""
from __future__ import annotations

import os
from typing import Any, Callable
from urllib.parse import quote

GCS_URL = "https://storage.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class GcsStager:
    def __init__(self, bucket_uri: str, credentials: Callable[[], Any], prefix: str = "toolkit-staging/",
                 timeout: float = 300.0) -> None:
        if not bucket_uri.startswith("gs://") or not bucket_uri[5:].strip("/"):
            raise ValueError(bucket_uri)
        self.bucket, _, extra = bucket_uri[5:].strip("/").partition("/")
        self.prefix = (extra.strip("/") + "/" if extra else "") + prefix
        self.timeout = timeout
        self._credentials = credentials  # resolved on first upload, not at construction
        self._session = None
        emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
        self.base_url = (emulator if "://" in emulator else f"http://{emulator}") if emulator else GCS_URL

    def object_name(self, sha256: str, suffix: str = "") -> str:
        # Named by content: staging the same video twice writes the same object.
        return f"{self.prefix}{sha256}{suffix}"

    def upload(self, name: str, data: bytes, content_type: str) -> str:
        url = f"{self.base_url}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        resp = self._http().post(url, params={"uploadType": "media", "name": name}, data=data,
                                 headers={"Content-Type": content_type or "application/octet-stream"},
                                 timeout=self.timeout)
        resp.raise_for_status()
        return f"gs://{self.bucket}/{name}"

    def delete(self, name: str) -> None:
        url = f"{self.base_url}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"
        resp = self._http().delete(url, timeout=30)
        if resp.status_code != 404:  # already gone is fine
            resp.raise_for_status()

    def _http(self):
        if self._session is None:
            if self.base_url != GCS_URL:
                import requests

                self._session = requests.Session()  # a local emulator takes no credentials
            else:
                from google.auth.transport.requests import AuthorizedSession

                self._session = AuthorizedSession(self._credentials())
        return self._session
