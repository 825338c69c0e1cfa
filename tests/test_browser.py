"""The search page in headless Chromium against the real server: type a query, drop a photo, see product cards."""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.service_helpers import build_catalog, running_server
from toolkit.faces.api import create_app

CHROMIUM = Path(os.environ.get("TOOLKIT_CHROMIUM", "/usr/bin/chromium"))
# Headless on a machine with no GPU, no sandbox user namespace and no internet (ENVIRONMENT.md).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOT = REPO / "tests" / "artifacts" / "search-page.png"
# Copied by hand to docs/recommend-page.png when the page changes: a test run must not dirty the tree.
RECOMMEND_SCREENSHOT = REPO / "tests" / "artifacts" / "recommend-page.png"
SETUP_HINT = "run `scripts/setup --with-browser` (installs Debian's chromium and Playwright)"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, request):
    # The shipped model, so the page (and its screenshot) shows the tags and results users get.
    return build_catalog(tmp_path_factory.mktemp("browser"), request.getfixturevalue("shared_data"), real_model=True)


@pytest.fixture(scope="module")
def base_url(catalog):
    with running_server(create_app(catalog.toolkit)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    # Missing pieces fail loudly: a skipped browser test would pass CI without testing the page.
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}; {SETUP_HINT}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the playwright package is missing; {SETUP_HINT}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors, page.requests = [], []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda req: page.requests.append(req.url))
    page.goto(base_url)
    yield page
    context.close()


# Each input's placeholder, in the input's font, fits its box beside the number spinner.
PLACEHOLDERS_FIT = """(inputs) => inputs.every((el) => {
    const style = getComputedStyle(el);
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = `${style.fontSize} ${style.fontFamily}`;
    const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 16;
    return ctx.measureText(el.placeholder).width <= room;
})"""

# Cards below the fold load lazily; those on screen must have their picture.
VISIBLE_IMAGES_LOADED = """() => [...document.querySelectorAll('.card img')]
    .filter((img) => img.getBoundingClientRect().top < window.innerHeight)
    .every((img) => img.complete && img.naturalWidth > 0)"""


def drop_file(page, selector: str, data: bytes, name: str, mime: str = "image/jpeg") -> None:
    """A real drop event carrying a File, as a desktop drag-and-drop delivers it."""
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""", [base64.b64encode(data).decode(), name, mime])
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def distinct_photo(catalog) -> dict:
    """A photo no other product's photo matches as well (some catalog photos are near-duplicates)."""
    for row in catalog.rows[len(catalog.rows) // 2:]:
        first, second = catalog.toolkit.search(image=catalog.photos / f"{row['id']}.jpg", k=2)
        if first.product_id == f"P{row['id']}" and second.score < first.score - 0.01:
            return row
    raise AssertionError("every photo has a near-duplicate")


def cards(page, scope: str = "#results") -> list[dict]:
    return page.eval_on_selector_all(f"{scope} .card", """(cards) => cards.map((c) => ({
        product: c.dataset.productId,
        title: c.querySelector(".title").textContent,
        buy: c.querySelector(".buy") && c.querySelector(".buy").href,
        loaded: c.querySelector("img").complete && c.querySelector("img").naturalWidth > 0,
        moment: c.querySelector(".moment").hidden ? null : c.querySelector(".moment").textContent,
        reason: c.querySelector(".reason").hidden ? null : c.querySelector(".reason").textContent,
        score: c.querySelector(".score").textContent,
    }))""")


def test_type_a_query_drop_a_photo_and_buy(page, catalog, base_url):
    from playwright.sync_api import expect

    urls = catalog.urls()
    expect(page.locator("#facet-menus select").first).to_be_attached()
    # The price boxes show the catalog's range in full ("max 116", not "max 11").
    expect(page.locator("#price-max")).to_have_attribute("placeholder", re.compile(r"^max \d+$"))
    assert page.eval_on_selector_all("#price input", PLACEHOLDERS_FIT), "a price placeholder is cut"

    page.fill("#query", "Puma black")
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_contain_text("for “Puma black”")
    typed = cards(page)
    assert typed and typed[0]["title"].startswith("Puma ")
    assert all(c["buy"] in urls for c in typed), typed

    page.fill("#query", "")  # a photo with words searches both; this is the photo alone
    row = distinct_photo(catalog)
    photo = (catalog.photos / f"{row['id']}.jpg").read_bytes()
    drop_file(page, "#drop-zone", photo, f"{row['id']}.jpg")
    expect(page.locator("#status")).to_contain_text("like your photo")
    expect(page.locator("#photo-preview")).to_be_visible()
    page.wait_for_function(VISIBLE_IMAGES_LOADED)
    dropped = cards(page)
    assert dropped[0]["product"] == f"P{row['id']}" and dropped[0]["buy"] == f"https://shop.example.com/p/{row['id']}"
    assert all(c["buy"] in urls for c in dropped) and dropped[0]["loaded"], dropped
    assert "score" in page.locator(".card .score").first.text_content()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=False)

    page.locator(".card .more").first.click()  # more like the dropped photo's product
    expect(page.locator("#status")).to_contain_text(f"like “{dropped[0]['title']}”")
    similar = cards(page)
    assert similar and dropped[0]["product"] not in {c["product"] for c in similar}

    assert not page.errors, page.errors
    assert all(u.startswith((base_url, "blob:", "data:")) for u in page.requests), page.requests  # nothing off-site


def test_pick_a_photo_filter_to_videos_and_see_the_moment(page, catalog):
    from playwright.sync_api import expect

    expect(page.locator("select[data-field='kind']")).to_be_attached()
    page.set_input_files("#photo-input", str(catalog.photos / f"{catalog.rows[0]['id']}.jpg"))
    expect(page.locator("#status")).to_contain_text("like your photo")
    page.select_option("select[data-field='kind']", "video")
    expect(page.locator(".card")).to_have_count(1)
    expect(page.locator(".card .moment")).to_be_visible()
    page.wait_for_function(VISIBLE_IMAGES_LOADED)
    video = cards(page)
    assert len(video) == 1 and video[0]["buy"] == "https://shop.example.com/p/lookbook"
    assert video[0]["moment"].startswith("▶ at 0:0")

    page.click("#photo-clear")
    expect(page.locator("#photo-preview")).to_be_hidden()
    assert not page.errors, page.errors


@pytest.fixture(scope="module")
def shoppers(catalog):
    """Purchases of the catalog's products, trained as `toolkit recommend train` would: the first product
    is bought with the second in three baskets and with the third in two."""
    from datetime import datetime

    from toolkit.recommend.records import Event

    a, b, c, d = (f"P{catalog.rows[n]['id']}" for n in (0, 9, 17, 30))
    baskets = {"u1": [a, b], "u2": [a, b], "u3": [a, b, d], "u4": [a, c], "u5": [a, c]}
    rec = catalog.toolkit.recommend
    report = rec.record([Event(user, item, datetime(2024, 3, day)) for day, (user, items) in
                         enumerate(baskets.items(), 1) for item in items])
    assert report.added == 11 and not report.bad
    rec.train()
    return {"a": a, "b": b, "c": c}


def test_shopping_as_a_customer_shows_their_picks_and_a_products_bought_together(browser, base_url, catalog,
                                                                                   shoppers):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 1150})
    page = context.new_page()
    errors, requests = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda req: requests.append(req.url))
    page.goto(base_url)
    rec, urls = catalog.toolkit.recommend, catalog.urls()

    page.fill("#shopper", "u1")
    page.press("#shopper", "Enter")
    expect(page.locator("#picked .about")).to_have_text("for u1")
    expected = rec.for_user("u1", k=8).picks
    expect(page.locator("#picked .card")).to_have_count(len(expected))
    page.wait_for_function(VISIBLE_IMAGES_LOADED)
    picked = cards(page, "#picked")
    assert [(c["product"], c["reason"]) for c in picked] == [(p.product_id, p.reason) for p in expected]
    assert len(picked) >= 3 and {shoppers["c"]} <= {c["product"] for c in picked}  # bought with what u1 bought
    assert all(c["title"] and c["buy"] in urls and c["loaded"] and c["score"].startswith("score ") for c in picked)
    by_product = {c["product"]: c for c in picked}
    assert by_product[shoppers["a"]]["reason"] == "buy it again: you bought it on 2024-03-01"
    assert all(c["reason"].startswith(("buy it again", "because you bought ", "looks like ", "trending"))
               and not re.search(r"\bP\d+\b", c["reason"]) for c in picked), picked  # titles, not ids

    page.locator(f"#picked .card[data-product-id='{shoppers['a']}'] .more").click()
    a_title = by_product[shoppers["a"]]["title"]
    expect(page.locator("#together .about")).to_have_text(f"with “{a_title}”")
    expect(page.locator("#status")).to_contain_text(f"like “{a_title}”")
    together = [p.product_id for p in rec.together(shoppers["a"], k=8).picks]
    assert together[:2] == [shoppers["b"], shoppers["c"]]
    expect(page.locator("#together .card")).to_have_count(len(together))
    page.wait_for_function(VISIBLE_IMAGES_LOADED)
    strip = cards(page, "#together")
    assert [c["product"] for c in strip] == together
    assert strip[0]["reason"].startswith("bought together: confidence 0.60, lift ")
    assert all(c["buy"] in urls and c["loaded"] for c in strip)
    assert cards(page)  # results like the product stay below both strips
    RECOMMEND_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(RECOMMEND_SCREENSHOT), full_page=False)

    # The strips follow the page's filters: a price cap leaves out the dearer complements.
    prices = {p.product_id: p.price for p in rec.together(shoppers["a"], k=8).picks}
    cap = min(prices.values())
    cheap = [p.product_id for p in rec.together(shoppers["a"], k=8, where=[f"price<={cap:g}"]).picks]
    assert cheap and all(prices[p] <= cap for p in cheap)
    page.fill("#price-max", f"{cap:g}")
    page.locator("#price-max").dispatch_event("change")
    if len(cheap) < len(prices):
        expect(page.locator("#together .card")).to_have_count(len(cheap))
    page.wait_for_function("[...document.querySelectorAll('#together .card')].length > 0")
    assert [c["product"] for c in cards(page, "#together")] == cheap
    assert any("/api/recommend/together/" in u and "where=price%3C%3D" in u for u in requests), requests
    page.fill("#price-max", "")
    page.locator("#price-max").dispatch_event("change")
    expect(page.locator("#together .card")).to_have_count(len(together))

    page.reload()  # the shopper is remembered
    expect(page.locator("#picked .card")).to_have_count(len(expected))
    page.fill("#shopper", "nobody")
    page.press("#shopper", "Enter")
    expect(page.locator("#picked .note")).to_contain_text("no events for user 'nobody': trending")
    expect(page.locator("#picked .card").first).to_be_attached()

    assert not errors, errors
    assert all(u.startswith((base_url, "blob:", "data:")) for u in requests), requests
    context.close()
