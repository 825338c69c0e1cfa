"""Settings from the environment and `.env`: the one place the toolkit reads its configuration.

Every field here is listed in `.env.example`. Other modules take values from a Settings object
(or read a field's default with `default_of`), never from os.environ, and never restate a default.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from dotenv import load_dotenv
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        # `.env` is read once, by load_settings, into the environment (the cloud SDKs read it there);
        # Settings reads the environment.
        env_prefix="TOOLKIT_", extra="ignore", env_ignore_empty=True, populate_by_name=True,
    )

    # Where things are kept
    data_dir: Path = Field(Path(".toolkit"), description="Folder for the embedded store and caches.")
    chroma_path: Path | None = Field(None, description="Embedded Chroma folder (default: DATA_DIR/chroma).")
    chroma_host: str | None = Field(None, description="Chroma server host; with CHROMA_PORT, use a server instead of the embedded store.")
    chroma_port: int | None = Field(None, description="Chroma server port.")
    store_wait: float = Field(0.0, ge=0, description="Seconds a command waits while another process has the embedded store open (0: as long as it takes); a running `toolkit serve` shares the store instead.")
    collection: str = Field("catalog", description="Name of the media collection; after `toolkit reindex` it points at the collection in use (`toolkit collections list`).")

    # Embedding model
    model: Literal["offline", "clip"] = Field("offline", description="Embedding backend: offline (shipped two-tower model) or clip.")
    clip_model: str = Field("openai/clip-vit-base-patch32", description="CLIP model name on the hub, or a local folder.")
    heads_path: Path | None = Field(None, description="Projection heads for the offline model (default: the shipped ones).")
    runtime: Literal["auto", "torch", "onnx"] = Field("auto", description="Inference runtime for the offline model.")
    precision: Literal["auto", "int8", "fp32"] = Field(
        "auto", description="Image backbone precision on ONNX Runtime. auto: int8 where, measured on this CPU, it "
                            "matches fp32 and is faster (about 2x with VNNI), else fp32; int8: wherever it matches "
                            "fp32; fp32: always. `toolkit model info` says which is in force and why.")
    batch_size: int = Field(32, ge=1, le=512, description="Images per embedding batch.")
    threads: int = Field(0, ge=0, description="Inference threads (0: one per core).")

    # Local tagger
    vocabulary: Path | None = Field(None, description="Fashion vocabulary JSON for the local tagger (default: shipped).")
    tag_threshold: float = Field(0.35, ge=0.0, le=1.0, description="Confidence under which the local tagger gives no label.")

    # Media
    max_image_pixels: int = Field(50_000_000, description="Larger images are skipped (decompression-bomb guard).")
    decode_pixels: int = Field(64_000_000, ge=1_000_000, description="Most image pixels decoded at once in one process (about 7 bytes each while decoding): bounds memory when large images arrive together; the others wait their turn.")
    video_interval: float = Field(2.0, gt=0, description="Seconds between sampled frames when no scene change is found.")
    video_scene_threshold: float = Field(0.35, ge=0, le=1, description="Frame difference (0-1) that counts as a scene change.")
    video_max_frames: int = Field(64, ge=1, description="Most frames kept per video.")

    # S3
    s3_endpoint_url: str | None = Field(None, description="Endpoint for S3-compatible servers (MinIO, moto); empty for AWS.")
    s3_region: str | None = Field(None, description="S3 region (default: boto3's chain).")
    s3_addressing_style: Literal["auto", "virtual", "path"] = Field(
        "auto", description="S3 addressing: virtual-hosted (bucket.host), path (host/bucket, some S3-compatible servers need it) or auto.")

    # Azure Custom Vision (prediction)
    azure_cv_endpoint: str | None = Field(None, description="Custom Vision prediction endpoint, https://<name>.cognitiveservices.azure.com/")
    azure_cv_prediction_key: SecretStr | None = Field(None, description="Custom Vision prediction key.")
    azure_cv_project_id: str | None = Field(None, description="Custom Vision project id (GUID).")
    azure_cv_iteration: str | None = Field(None, description="Published iteration name.")
    azure_cv_mode: Literal["classify", "detect"] = Field("classify", description="classify or detect (object detection).")
    azure_rate: float = Field(10.0, gt=0, description="Most Custom Vision calls per second.")
    azure_cv_threshold: float = Field(0.5, ge=0, le=1, description="Custom Vision predictions under this probability are dropped.")
    azure_cv_store_predictions: bool = Field(False, description="Keep uploaded images in the Custom Vision project (slower quota: 10 instead of 20 calls/s on S0).")
    azure_timeout: float = Field(30.0, gt=0, description="Seconds to wait for one Custom Vision answer before retrying.")

    # Google Video Intelligence
    google_application_credentials: Path | None = Field(
        None, validation_alias="GOOGLE_APPLICATION_CREDENTIALS",
        description="Google service-account key JSON (Google's own variable, no TOOLKIT_ prefix); empty: gcloud's application-default login.")
    gcp_vi_endpoint: str | None = Field(None, description="Video Intelligence endpoint override (host:port); empty for Google's.")
    gcp_staging_bucket: str | None = Field(None, description="gs:// bucket where videos over the inline limit are staged.")
    gcp_rate: float = Field(1.0, gt=0, description="Most Video Intelligence requests (annotate and status checks) per second; Google's default quota is 60 a minute.")
    gcp_timeout: float = Field(600.0, gt=0, description="Seconds to wait for one video's annotation.")
    gcp_poll_interval: float = Field(1.0, gt=0, description="Seconds before the first check on a video's annotation (then up to 20 s apart).")

    # Cloud calls
    label_mapping: Path | None = Field(None, description="JSON mapping cloud labels onto the catalog vocabulary (default: shipped).")
    max_retries: int = Field(5, ge=0, description="Tries after the first for a throttled or failing call.")
    concurrency: int = Field(8, ge=1, description="Cloud calls in flight at once per service.")

    # Search service
    serve_host: str = Field("127.0.0.1", description="Address `toolkit serve` listens on.")
    serve_port: int = Field(8000, description="Port `toolkit serve` listens on.")
    max_upload_mb: float = Field(10.0, gt=0, description="Largest image upload the API accepts, in MiB.")
    batch_queries: bool = Field(True, description="`toolkit serve`: embed the queries of requests that arrive together in one model call (more requests a second under load; none waits for it).")
    hybrid_weight: float = Field(0.3, ge=0, description="Weight of exact query words (in a product's title, tags or attributes) added to the vector score of a text search; 0 ranks by vectors alone.")

    @property
    def resolved_chroma_path(self) -> Path:
        return self.chroma_path or (self.data_dir / "chroma")

    @property
    def uses_chroma_server(self) -> bool:
        return bool(self.chroma_host and self.chroma_port)

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable that sets field `name`."""
        return cls.model_fields[name].validation_alias or f"TOOLKIT_{name.upper()}"  # type: ignore[return-value]

    def masked(self) -> dict[str, str]:
        """Settings in force, secrets shown only as set or unset."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "****** (set)" if value.get_secret_value() else "(empty)"
            else:
                out[name] = "" if value is None else str(value)
        return out


def default_of(name: str) -> Any:
    """A setting's default, for code that needs it without a Settings object (a function's default)."""
    return Settings.model_fields[name].default


def load_settings(**overrides: object) -> Settings:
    # Standard SDK variables (AWS_*, GOOGLE_APPLICATION_CREDENTIALS) may live in .env too;
    # the SDKs read os.environ, so put them there without overriding what is already set.
    load_dotenv(Path.cwd() / ".env", override=False)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("ORT_TELEMETRY_DISABLED", "1")  # ONNX Runtime reads it as it starts
    return Settings(**overrides)
