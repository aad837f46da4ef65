"""The tutorial site, built as `make docs` builds it and opened page by page in headless Chromium.

Pages are opened from disk (file://), as a reader opening site/index.html would. For every page: no error output or
Python traceback, every picture loaded (natural width > 0), every internal link leading to a page, no request of the
page failed or left the site, no JavaScript error; on the demo's 02 page, the masks' colours, on its 03 page the
training's progress lines. A screenshot of each page is
saved under runs/docs-screens/ for a person to look at. Skips, saying why, only where Chromium is not installed
(`apt-get install chromium`; .ci/run installs it).
"""
import importlib.util
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

from lib.display import TRAINED_BACKGROUND
from lib.paths import PROJECT_ROOT, runs_root

pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("docs_site", PROJECT_ROOT / "tools" / "docs_site.py")
docs_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_site)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return docs_site.build(tmp_path_factory.mktemp("site") / "site")


def page_urls(site) -> list[str]:
    """Every page, as a reader opening site/index.html from disk reaches it (file:// URLs)."""
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html" and not {"assets", "search"} & set(p.parts))
    return [p.as_uri() for p in pages]


def test_every_page_renders_with_its_pictures_and_links(site):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed here (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    root = site.as_uri() + "/"
    urls = page_urls(site)
    # the landing page, the 15 notebooks of the three runs, the recipes' index and one page per params file
    notebooks = sum(len(stages) for stages in docs_site.SITE_RUNS.values())  # 5 + 6 + 5 + 5
    assert len(urls) == 1 + notebooks + 1 + len(list((PROJECT_ROOT / "params").glob("*.yaml"))), urls
    screens = runs_root() / "docs-screens"
    shutil.rmtree(screens, ignore_errors=True)
    screens.mkdir(parents=True)
    links, problems = set(), []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        failed = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        # offline: nothing but the site's own files (no web font, no CDN script, no widget manager)
        page.on("request", lambda request: None if request.url.startswith((root, "data:"))
                else failed.append(f"off-site {request.url}"))
        page.on("pageerror", lambda error: failed.append(f"JavaScript error: {error}"))
        for url in urls:
            failed.clear()
            page.goto(url, wait_until="load")
            name = url.removeprefix(root).removesuffix(".html").replace("/", "__")
            text = page.inner_text("body")
            if "Traceback (most recent call last)" in text:
                problems.append(f"{url}: a Python traceback")
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            if any("Error" in errors.nth(i).inner_text() for i in range(errors.count())):
                problems.append(f"{url}: an error output")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src').slice(0, 60), "
                                   "i.complete, i.naturalWidth])")
            problems += [f"{url}: picture {src} did not load" for src, complete, width in images
                         if not complete or width == 0]
            problems += [f"{url}: request failed: {f}" for f in failed]
            links |= {urldefrag(href)[0] for href in page.evaluate("Array.from(document.links).map(a => a.href)")
                      if href.startswith(root)}
            if url.endswith("smollm2_135m/02_masking.html"):
                coloured = page.locator(f"span[style*='{TRAINED_BACKGROUND}']").count()
                if coloured < 20:
                    problems.append(f"{url}: {coloured} trained-token spans, the mask view is missing")
            if url.endswith("smollm2_135m/03_train.html") and "step 160/160" not in text:
                problems.append(f"{url}: no training progress line")
            # the whole page: Material's layout scrolls inside the viewport, so the viewport is made as tall as it
            height = page.evaluate("document.documentElement.scrollHeight")
            page.set_viewport_size({"width": 1280, "height": min(max(height, 900), 12000)})
            page.screenshot(path=str(screens / f"{name}.png"))
            page.set_viewport_size({"width": 1280, "height": 900})
        browser.close()
    for link in sorted(links):
        target = Path(urllib.request.url2pathname(urlparse(link).path))
        if not (target.is_file() or (target / "index.html").is_file()):
            problems.append(f"link {link}: no such page")
    assert problems == []
    assert len(list(screens.glob("*.png"))) == len(urls)
