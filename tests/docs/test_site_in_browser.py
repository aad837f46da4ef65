"""The tutorial site, built as `make docs` builds it and opened page by page in headless Chromium.

For every page: no error output or Python traceback, every picture loaded (natural width > 0), every internal link
answered, no request of the page failed; on the demo's 02 page, the masks' colours. A screenshot of each page is
saved under runs/docs-screens/ for a person to look at. Skips, saying why, only where Chromium is not installed
(`apt-get install chromium`; .ci/run installs it).
"""
import http.server
import importlib.util
import shutil
import threading
import urllib.error
import urllib.request
from functools import partial
from urllib.parse import urldefrag, urlparse

import pytest

from lib.paths import PROJECT_ROOT, runs_root

pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("docs_site", PROJECT_ROOT / "tools" / "docs_site.py")
docs_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_site)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TRAINED_COLOUR = "c8f7c5"  # lib.display.colored_html's background of a trained token


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a browser closing a connection early (BrokenPipe): the page checks say what matters


@pytest.fixture(scope="module")
def served_site(tmp_path_factory):
    site = docs_site.build(tmp_path_factory.mktemp("site") / "site")
    server = QuietServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def page_urls(site, root: str) -> list[str]:
    pages = sorted(p.relative_to(site) for p in site.rglob("index.html") if "assets" not in p.parts)
    return [root + ("" if str(p.parent) == "." else f"{p.parent}/") for p in pages]


def test_every_page_renders_with_its_pictures_and_links(served_site):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed here (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    site, root = served_site
    urls = page_urls(site, root)
    # the landing page, the 15 notebooks of the three runs, the recipes' index and one page per params file
    assert len(urls) == 1 + 15 + 1 + len(list((PROJECT_ROOT / "params").glob("*.yaml"))), urls
    screens = runs_root() / "docs-screens"
    shutil.rmtree(screens, ignore_errors=True)
    screens.mkdir(parents=True)
    links, problems = set(), []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        failed = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.on("response", lambda response: failed.append(f"{response.status} {response.url}")
                if response.status >= 400 else None)
        for url in urls:
            failed.clear()
            page.goto(url, wait_until="load")
            name = urlparse(url).path.strip("/").replace("/", "__") or "index"
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
            if url.endswith("smollm2_135m/02_masking/"):
                coloured = page.locator(f"span[style*='{TRAINED_COLOUR}']").count()
                if coloured < 20:
                    problems.append(f"{url}: {coloured} trained-token spans, the mask view is missing")
            if url.endswith("smollm2_135m/03_train/") and "step 160/160" not in text:
                problems.append(f"{url}: no training progress line")
            page.screenshot(path=str(screens / f"{name}.png"), full_page=True)
        browser.close()
    for link in sorted(links):
        try:
            urllib.request.urlopen(link, timeout=10).close()
        except urllib.error.HTTPError as err:
            problems.append(f"link {link}: HTTP {err.code}")
    assert problems == []
    assert len(list(screens.glob("*.png"))) == len(urls)
