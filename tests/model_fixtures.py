"""Fixtures for the model tests: the shared real photos, the shipped offline model, a tiny CLIP.

Import what a test file needs: `from tests.model_fixtures import shared_data, offline, photo`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Clear examples from the eval split (never trained on): name -> product id.
CLEAR = {
    "tshirt": "13430",        # Men, Yellow, Tshirts
    "watch": "11484",         # Men, Black, Watches
    "heels": "17656",         # Women, Beige, Heels
    "casual_shoes": "20892",  # Men, Black, Casual Shoes
    "handbag": "10249",       # Women, Brown, Handbags
}


def shared_data_dir() -> Path:
    return Path(os.environ.get("TOOLKIT_SHARED_DATA", ROOT.parent / "shared" / "data" / "fashion-products"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "styles.csv").is_file():
        pytest.fail(f"shared fashion data not found at {path} (set TOOLKIT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def photo(shared_data: Path):
    """photo("tshirt") -> the PIL image of that clear example."""
    def load(name: str) -> Image.Image:
        return Image.open(shared_data / "images" / f"{CLEAR.get(name, name)}.jpg").convert("RGB")
    return load


@pytest.fixture(scope="session")
def offline():
    """The shipped offline model on PyTorch (no ONNX export into the user's cache)."""
    from taggers.offline.model import OfflineEmbedder

    return OfflineEmbedder(runtime="torch", batch_size=8, threads=2)


def make_tiny_clip(folder: Path) -> Path:
    """A random CLIP a few hundred KB big, with a word-level tokenizer built here: no download."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    words = "a photo of black red blue shoes watch t-shirt dress men women".split()
    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<bos>", eos_token="<eos>")
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=16, eos_token_id=3, pad_token_id=0, bos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
