"""A small real catalog and a real uvicorn server, for the API and browser tests."""
from __future__ import annotations

import csv
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.helpers import ColourEmbedder, free_port, read_styles, write_mp4, write_products_csv
from toolkit.core import Toolkit
from toolkit.ground.settings import Settings

BRANDS = ("Puma", "Nike", "ADIDAS")
PER_BRAND = 8
OTHERS = 16
VIDEO_PRODUCT = "PVIDEO"
VIDEO_URL = "https://shop.example.com/p/lookbook"


@dataclass
class Catalog:
    photos: Path
    products_csv: Path
    rows: list[dict]
    toolkit: Toolkit

    def urls(self) -> set[str]:
        with self.products_csv.open(newline="", encoding="utf-8") as fh:
            return {r["url"] for r in csv.DictReader(fh)}


def pick_rows(shared: Path) -> list[dict]:
    """Eight products of each of three brands (two of them black Pumas) and sixteen of other brands."""
    rows = read_styles(shared)
    brand = {b: [r for r in rows if r["productDisplayName"].split(" ", 1)[0] == b] for b in BRANDS}
    black_pumas = [r for r in brand["Puma"] if r["baseColour"] == "Black"][:2]
    picked = black_pumas + [r for r in brand["Puma"] if r not in black_pumas][: PER_BRAND - len(black_pumas)]
    for b in BRANDS[1:]:
        picked += brand[b][:PER_BRAND]
    others = [r for r in rows if r["productDisplayName"].split(" ", 1)[0] not in BRANDS]
    return picked + others[:: max(1, len(others) // OTHERS)][:OTHERS]


def build_catalog(root: Path, shared: Path, *, real_model: bool = False, **settings: object) -> Catalog:
    """Real photos and one lookbook video, tagged with the fast test embedder (or the shipped
    offline model), and a products CSV."""
    rows = pick_rows(shared)
    photos = root / "media"
    photos.mkdir(parents=True)
    for r in rows:
        shutil.copy(shared / "images" / f"{r['id']}.jpg", photos / f"{r['id']}.jpg")
    write_mp4(photos / "lookbook.mp4", seconds_each=2.0)
    products = write_products_csv(root / "products.csv", rows)
    with products.open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow([VIDEO_PRODUCT, "Lookbook Summer Video", "99.00", "EUR", VIDEO_URL, "lookbook.mp4",
                                 "Women", "Video", "Multi"])
    # No .env and explicit locations: these fixtures outlive the per-test environment.
    opts = dict(_env_file=None, data_dir=root / "data", chroma_host=None, chroma_port=None, collection="catalog")
    tk = Toolkit(Settings(**{**opts, **settings}), embedder=None if real_model else ColourEmbedder())
    tk.import_catalog(products)
    report = tk.tag(photos, tagger="local")
    assert report.new == len(rows) + 1 and not report.failed and not report.skipped, report
    return Catalog(photos=photos, products_csv=products, rows=rows, toolkit=tk)


@contextmanager
def running_server(app, timeout: float = 30.0, **config) -> Iterator[str]:
    """The app on a real uvicorn on 127.0.0.1, in a thread; yields its base URL. `config`
    goes to uvicorn.Config (e.g. the `http` protocol `toolkit serve` uses)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", **config))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
