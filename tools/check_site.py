#!/usr/bin/env python3
"""Check the built website in headless Chromium, page by page.

    python tools/check_site.py _build/html --screenshots _build/screenshots [--repo .]

Serves HTML_DIR on 127.0.0.1 (an ephemeral port) and loads every HTML page of the book in headless
Chromium (Debian's `chromium`, driven by Playwright; no browser download needed). On every page:

1. math: MathJax (loaded from the site itself) has typeset every `.math` element, and no raw `$$`,
   `\\[`, `\\(` or `\\begin{` is left in the text outside code; the page requests nothing from any
   other host (such requests are blocked and reported);
2. every image has loaded;
3. no cell output holds a traceback, warning, error, local path or raw ANSI escape, and there is
   no stderr or traceback output block at all;
4. every link into the site resolves, `#fragment` included;
5. a page built from a notebook has exactly one Colab button, pointing at that notebook in the
   repository named by `_config.yml`; a page built from markdown has none;
6. no code or output block is wider than its box at the 1280-pixel-wide window (its lines would be
   cut at the box's edge, or scroll sideways), hidden solutions and collapsed cells opened first;
7. a full-page screenshot goes to the `--screenshots` folder (`chapters/x/y.html` -> `chapters/x/y.png`).

Chromium runs with a fresh temporary profile (Playwright's own --user-data-dir), and each page gets
a fresh browser context, so every page is judged as a first-time visitor sees it.
JavaScript errors and failed requests to the site count as problems too. Sphinx's genindex, search
and module index pages, and redirect pages, are only checked to load cleanly.

Prints one line per page (OK, or the number of problems followed by one indented line each), then
a summary. Exit code: 0 if no problem, 1 if any, 2 if the check could not run (no Chromium, no
Playwright, no HTML folder), 3 if the browser stopped answering (one page took longer than `--stall`
seconds, or the whole check longer than `--deadline`); `make site-check` retries once on 3.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.client
import http.server
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

try:  # checked in main(): the module itself imports without Playwright (the tests skip then)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:
    PlaywrightTimeout = sync_playwright = None

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
COLAB_PREFIX = "https://colab.research.google.com/github/"
# Pages that Sphinx generates itself: only checked to load without errors.
LOAD_ONLY = {"genindex.html", "search.html", "py-modindex.html"}
# Text that must never appear in a cell output.
# A cell tagged `raises-exception` shows its error on purpose; every other output must be free of these.
# (A deliberately printed message such as "ValueError: ..." is fine; a traceback or warning is not.)
BAD_OUTPUT = ["Traceback", "Warning:", "warn(", "/root/", "site-packages", "\x1b["]
# TeX that MathJax or MyST should have consumed; seen outside code it means math was not rendered.
RAW_TEX = ["$$", "\\[", "\\(", "\\begin{"]
CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]


# --------------------------------------------------------------------------- serving the site


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class SiteServer:
    """`http.server` on 127.0.0.1 with an ephemeral port, in a daemon thread."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "SiteServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Anchors(html.parser.HTMLParser):
    """Collects every `id`, every `<a name>`, and a `<meta http-equiv=refresh>` target."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refresh: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            m = re.search(r"url\s*=\s*['\"]?([^'\";]+)", a.get("content") or "", re.I)
            if m:
                self.refresh = m.group(1).strip()


@dataclass
class Target:
    status: int
    ids: set[str] | None  # None: not an HTML page
    refresh: str | None = None


class LinkChecker:
    """Fetches link targets from the local server once each and remembers their anchors."""

    def __init__(self, port: int):
        self.port = port
        self.cache: dict[str, Target] = {}

    def _fetch(self, path: str) -> tuple[int, str, bytes]:
        for _ in range(5):  # follow the server's redirects (a folder without its slash)
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
            finally:
                conn.close()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                path = urlsplit(urljoin(path, resp.getheader("Location"))).path
                continue
            if resp.status == 200 and b"<title>Directory listing for" in body[:1000]:
                return 404, "", b""  # http.server lists a folder that has no index.html
            return resp.status, resp.getheader("Content-Type") or "", body
        return 310, "", b""

    def get(self, url: str) -> Target:
        url = urldefrag(url)[0]
        if url not in self.cache:
            status, ctype, body = self._fetch(urlsplit(url).path or "/")
            ids = refresh = None
            if status == 200 and "html" in ctype:
                parser = _Anchors()
                parser.feed(body.decode("utf-8", "replace"))
                ids, refresh = parser.ids, parser.refresh
            self.cache[url] = Target(status, ids, refresh)
        return self.cache[url]


# --------------------------------------------------------------------------- the repository


@dataclass
class Repo:
    root: Path
    owner: str | None
    name: str | None
    branch: str
    path_to_book: str

    @classmethod
    def load(cls, root: Path) -> "Repo":
        import yaml

        cfg_file = root / "_config.yml"
        cfg = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        repo = (cfg or {}).get("repository") or {}
        m = re.match(r"https?://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?$", str(repo.get("url") or ""))
        # jupyter-book's own defaults for a missing branch and path
        return cls(
            root=root,
            owner=m.group(1) if m else None,
            name=m.group(2) if m else None,
            branch=str(repo.get("branch") or "master"),
            path_to_book=str(repo.get("path_to_book") or "").strip("/"),
        )

    def source(self, pagename: str) -> Path | None:
        """The file a page was built from: `pagename` plus a source suffix, or None."""
        for suffix in (".ipynb", ".md", ".rst"):
            p = self.root / (pagename + suffix)
            if p.is_file():
                return p
        return None

    def colab_url(self, pagename: str) -> str:
        path = "/".join(x for x in (self.path_to_book, pagename + ".ipynb") if x)
        return f"{COLAB_PREFIX}{self.owner}/{self.name}/blob/{self.branch}/{path}"


# --------------------------------------------------------------------------- in the browser

# Waits until the page is ready to be judged: MathJax has finished its first typesetting pass,
# every image has loaded or failed, and the fonts are in.
WAIT_READY_JS = """
async (timeoutMs) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + timeoutMs;
  const within = (p) => Promise.race([p, sleep(Math.max(0, deadline - Date.now()))]);
  if (document.querySelector('.math')) {
    // MathJax's script is deferred, so it has run by the load event; give a loader a moment more
    const ready = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
    const hasScript = !!window.MathJax || [...document.scripts].some((s) => /mathjax/i.test(s.src));
    const grace = Date.now() + (hasScript ? Math.min(3000, timeoutMs) : 0);
    while (!ready() && Date.now() < grace) await sleep(50);
    if (ready()) await within(MathJax.startup.promise.catch(() => null));
  }
  for (const img of document.images) if (img.loading === 'lazy') img.loading = 'eager';
  await within(Promise.all([...document.images].map((img) => img.complete ? null :
    new Promise((r) => { img.addEventListener('load', r, {once: true});
                         img.addEventListener('error', r, {once: true}); }))));
  if (document.fonts) await within(document.fonts.ready);
}
"""

# Gathers everything the checks need from the rendered page, in one round trip.
COLLECT_JS = r"""
([rawTex, colabPrefix]) => {
  const snip = (s, n = 80) => { s = (s || '').replace(/\s+/g, ' ').trim(); return s.length > n ? s.slice(0, n) + '…' : s; };
  const math = [...document.querySelectorAll('.math')];
  const untypeset = math.filter((el) => !el.querySelector('mjx-container')).map((el) => snip(el.textContent));
  // TeX that MathJax could not parse is typeset as a red error message
  const mathErrors = [...document.querySelectorAll('mjx-merror')]
    .map((el) => snip(el.getAttribute('data-mjx-error') || el.textContent));

  // raw TeX in text outside code, scripts and math elements (those are judged above)
  const skip = 'pre, code, script, style, textarea, noscript, template, .highlight, .math, mjx-container';
  const rawFound = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const t = n.nodeValue;
    if (!t || !rawTex.some((tok) => t.includes(tok))) continue;
    if (n.parentElement && n.parentElement.closest(skip)) continue;
    for (const tok of rawTex) {
      const i = t.indexOf(tok);
      if (i >= 0) rawFound.push([tok, snip(t.slice(Math.max(0, i - 30), i + 50))]);
    }
  }

  const images = [...document.images].filter((img) => !(img.complete && img.naturalWidth > 0))
    .map((img) => img.currentSrc || img.src || img.getAttribute('src') || '(no src)');

  const cells = [...document.querySelectorAll('div.cell')];
  const cellName = (el) => {
    const cell = el.closest('div.cell');
    if (!cell) return 'an output outside any cell';
    const src = cell.querySelector('.cell_input pre');
    const first = src ? (src.textContent.split('\n').find((l) => l.trim()) || '') : '';
    return `cell ${cells.indexOf(cell) + 1}` + (cell.id ? ` (#${cell.id})` : '') + (first ? ` [${snip(first, 60)}]` : '');
  };
  const expected = (el) => !!el.closest('div.cell.tag_raises-exception');
  const outputs = [...document.querySelectorAll('.cell_output')].filter((el) => !expected(el))
    .map((el) => [cellName(el), el.textContent]);
  const stderr = [...document.querySelectorAll('.stderr, .output.traceback')].filter((el) => !expected(el))
    .map((el) => [cellName(el), snip((el.querySelector('pre') || el).textContent)]);

  const links = [...new Set([...document.querySelectorAll('a[href]')]
    .filter((a) => !/^\s*(javascript|mailto|tel|data):/i.test(a.getAttribute('href')))
    .map((a) => a.href))];
  // the launch buttons in the article's header (sphinx-book-theme); a Colab link in the prose is no button
  const header = '.article-header-buttons, .dropdown-launch-buttons';
  const colab = [...document.querySelectorAll('a[href]')]
    .filter((a) => !document.querySelector(header) || a.closest(header))
    .map((a) => a.href).filter((h) => h.startsWith(colabPrefix));
  const ids = [...document.querySelectorAll('[id]')].map((el) => el.id)
    .concat([...document.querySelectorAll('a[name]')].map((el) => el.getAttribute('name')));
  // hints that make the browser contact another host without a request the page can see
  const hints = [...document.querySelectorAll('link[href]')]
    .filter((l) => /\b(preconnect|dns-prefetch|prefetch|prerender|preload|modulepreload|stylesheet|icon|manifest)\b/i.test(l.rel))
    .map((l) => l.href).filter((h) => { try { return new URL(h).host !== location.host; } catch (e) { return false; } });

  return {
    pagename: (window.DOCUMENTATION_OPTIONS && DOCUMENTATION_OPTIONS.pagename) || null,
    mathCount: math.length, untypeset, mathErrors, mathjax: !!(window.MathJax && MathJax.version),
    rawFound, images, outputs, stderr, links, colab, ids, hints,
  };
}
"""


# Opens every collapsed block (solutions, hidden cells), then names each code or output block whose
# text is wider than its box: [where, text width, box width, the longest line].
OVERFLOW_JS = r"""
() => {
  document.querySelectorAll('details').forEach((d) => { d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach((el) => el.classList.remove('toggle-hidden'));
  const snip = (s, n = 60) => { s = (s || '').replace(/\s+/g, ' ').trim(); return s.length > n ? s.slice(0, n) + '…' : s; };
  const cells = [...document.querySelectorAll('div.cell')];
  const where = (pre) => {
    const cell = pre.closest('div.cell');
    const part = pre.closest('.cell_output') ? 'output' : 'code';
    if (cell) return `cell ${cells.indexOf(cell) + 1}` + (cell.id ? ` (#${cell.id})` : '') + ` ${part}`;
    const section = pre.closest('section');
    const h = section && section.querySelector('h1, h2, h3, h4');
    return 'code block' + (h ? ` in "${snip(h.textContent.replace('#', ''), 40)}"` : '');
  };
  const wide = [];
  for (const pre of document.querySelectorAll('pre')) {
    if (!pre.clientWidth || pre.scrollWidth <= pre.clientWidth + 1) continue;
    const longest = pre.textContent.split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
    wide.push([where(pre), pre.scrollWidth, pre.clientWidth, snip(longest)]);
  }
  return wide;
}
"""


@dataclass
class PageResult:
    path: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, msg: str) -> None:
        if msg not in self.problems:
            self.problems.append(msg)


def _bad_output_lines(text: str) -> list[tuple[str, str]]:
    found = []
    for line in text.splitlines():
        for tok in BAD_OUTPUT:
            if tok in line:
                found.append((tok, line.strip()))
                break
    return found


def _short(s: str, n: int = 160) -> str:
    s = s.replace("\x1b", "\\x1b")
    return s if len(s) <= n else s[: n - 1] + "…"


class SiteChecker:
    def __init__(self, html_dir: Path, repo: Path, screenshots: Path | None, chromium: str, timeout: float):
        self.html_dir = html_dir
        self.repo = Repo.load(repo)
        self.screenshots = screenshots
        self.chromium = chromium
        self.timeout = timeout

    def pages(self) -> list[str]:
        """Every HTML page, as a path relative to the HTML folder; Sphinx's `_static` etc. left out."""
        found = []
        for p in sorted(self.html_dir.rglob("*.html")):
            rel = p.relative_to(self.html_dir)
            if rel.parts[0].startswith("_") or rel.parts[0].startswith("."):
                continue
            found.append(rel.as_posix())
        return found

    def run(self, report=print, heartbeat=lambda rel: None) -> list[PageResult]:
        """Check every page; `report` gets one formatted result per page, `heartbeat` each page's name
        before its check starts (the stall watchdog restarts there)."""
        results = []
        with SiteServer(self.html_dir) as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=self.chromium, headless=True, args=CHROMIUM_FLAGS)
            try:
                links = LinkChecker(server.port)
                for rel in self.pages():
                    heartbeat(rel)
                    t0 = time.monotonic()
                    res = PageResult(rel)
                    # a fresh profile per page: each page is judged as a first-time visitor sees it
                    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
                    try:
                        self.check_page(context, server, links, rel, res)
                    except Exception as e:  # one broken page must not hide the others
                        res.add(f"check crashed: {type(e).__name__}: {_short(str(e))}")
                    finally:
                        context.close()
                    res.seconds = time.monotonic() - t0
                    results.append(res)
                    report(format_result(res))
            finally:
                browser.close()
        return results

    # ------------------------------------------------------------------ one page

    def check_page(self, context, server: SiteServer, links: LinkChecker, rel: str, res: PageResult) -> None:
        url = server.base + rel
        host = urlsplit(server.base).netloc
        page = context.new_page()
        offhost: list[str] = []
        done = []  # set once the page is judged: closing it aborts requests that are not its fault

        def problem(msg: str) -> None:
            if not done:
                res.add(msg)

        def route(r):
            u = r.request.url
            parts = urlsplit(u)
            if parts.scheme in ("http", "https", "ws", "wss", "ftp") and parts.netloc != host:
                offhost.append(u)
                r.abort("blockedbyclient")
            else:
                r.continue_()

        page.route("**/*", route)
        page.on("pageerror", lambda e: problem(f"JavaScript error: {_short(str(e))}"))

        def on_console(msg):
            # failed loads are reported with their URL by the request handlers below
            if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
                loc = msg.location.get("url", "") if msg.location else ""
                problem(f"console error: {_short(msg.text)}" + (f" (at {loc.replace(server.base, '')})" if loc else ""))

        page.on("console", on_console)

        def on_failed(req):
            if urlsplit(req.url).netloc == host:
                problem(f"request failed: {req.url.replace(server.base, '')} ({req.failure})")

        page.on("requestfailed", on_failed)

        def on_response(resp):
            if urlsplit(resp.url).netloc == host and resp.status >= 400:
                problem(f"HTTP {resp.status} for {resp.url.replace(server.base, '')}")

        page.on("response", on_response)

        try:
            target = links.get(url)
            if target.refresh is not None:
                # a redirect page (Sphinx's index.html): its target must exist. Judged from the HTTP
                # response alone: a browser that follows the refresh at once can miss the wait for it.
                dest = urldefrag(urljoin(url, target.refresh))[0]
                if links.get(dest).status != 200:
                    res.add(f"redirects to {target.refresh}, which does not exist")
                return
            try:
                resp = page.goto(url, wait_until="load", timeout=self.timeout * 1000)
            except PlaywrightTimeout:
                res.add(f"page did not finish loading within {self.timeout:g} s")
                return
            if resp is None or resp.status != 200:
                res.add(f"page did not load: HTTP {resp.status if resp else 'no response'}")
                return
            page.evaluate(WAIT_READY_JS, self.timeout * 1000)
            info = page.evaluate(COLLECT_JS, [RAW_TEX, COLAB_PREFIX])
            if rel not in LOAD_ONLY:
                self.judge(rel, url, info, links, res)
                for block, text_px, box_px, line in page.evaluate(OVERFLOW_JS):
                    res.add(f"{block} is wider than its box ({text_px} px of text in {box_px} px): {line}")
            if self.screenshots is not None:
                shot = self.screenshots / (rel[: -len(".html")] + ".png")
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True, timeout=self.timeout * 1000)
        finally:
            for u in offhost:
                res.add(f"loads from the network: {_short(u)}")
            done.append(True)
            page.close()

    def judge(self, rel: str, url: str, info: dict, links: LinkChecker, res: PageResult) -> None:
        root = "/".join(url.split("/", 3)[:3]) + "/"  # http://127.0.0.1:PORT/
        # 1. math
        if info["mathCount"] and not info["mathjax"]:
            res.add(f"MathJax did not load, {info['mathCount']} math elements left as TeX")
        elif info["untypeset"]:
            res.add(f"{len(info['untypeset'])} of {info['mathCount']} math elements not typeset, first: {info['untypeset'][0]}")
        for err in info["mathErrors"]:
            res.add(f"MathJax could not typeset some TeX: {err}")
        for tok, ctx in info["rawFound"]:
            res.add(f"raw TeX {tok} in the text: {ctx}")
        for h in info["hints"]:
            res.add(f"loads from the network: {_short(h)}")
        # 2. images
        for src in info["images"]:
            res.add(f"image did not load: {src.replace(root, '')}")
        # 3. cell outputs
        for cell, text in info["outputs"]:
            for tok, line in _bad_output_lines(text):
                res.add(f"{cell}: output contains {tok!r}: {_short(line)}")
        for cell, text in info["stderr"]:
            res.add(f"{cell}: stderr/traceback output block: {text}")
        # 4. internal links
        same_page = set(info["ids"])
        host = urlsplit(url).netloc
        for href in info["links"]:
            parts = urlsplit(href)
            if parts.netloc != host or parts.scheme not in ("http", "https"):
                continue
            base, frag = urldefrag(href)
            target = links.get(base)
            shown = href.replace(root, "")
            if target.status != 200:
                res.add(f"broken link: {shown} (HTTP {target.status})")
                continue
            frag = unquote(frag)
            if frag and target.ids is not None:
                ids = target.ids | (same_page if base == urldefrag(url)[0] else set())
                if frag not in ids:
                    res.add(f"broken anchor: {shown} (no element with id {frag!r})")
        # 5. Colab button
        self.judge_colab(rel, info, res)

    def judge_colab(self, rel: str, info: dict, res: PageResult) -> None:
        pagename = info["pagename"] or rel[: -len(".html")]
        src = self.repo.source(pagename)
        colab = info["colab"]
        if src is None:
            res.add(f"no source file {pagename}.ipynb/.md/.rst in {self.repo.root}")
            return
        if src.suffix != ".ipynb":
            if colab:
                res.add(f"page built from {src.name} has a Colab button: {colab[0]}")
            return
        if len(colab) != 1:
            res.add(f"page built from {pagename}.ipynb has {len(colab)} Colab buttons, expected 1")
            if not colab:
                return
        if self.repo.owner is None:
            res.add("cannot check the Colab button: _config.yml has no GitHub repository.url")
            return
        expected = self.repo.colab_url(pagename)
        for got in colab:
            if got != expected:
                res.add(f"Colab button points at {got}, expected {expected}")
        # the notebook the expected URL names must exist in the repository
        if not (self.repo.root / (pagename + ".ipynb")).is_file():
            res.add(f"Colab notebook {pagename}.ipynb is missing from {self.repo.root}")


def format_result(res: PageResult) -> str:
    if not res.problems:
        return f"OK    {res.path}  ({res.seconds:.1f} s)"
    lines = [f"FAIL  {res.path}  ({res.seconds:.1f} s): {len(res.problems)} problem(s)"]
    lines += [f"      - {p}" for p in res.problems]
    return "\n".join(lines)


def find_chromium(given: str | None) -> str | None:
    for cand in [given, os.environ.get("CHROMIUM")] + CHROMIUM_NAMES:
        if cand:
            found = shutil.which(cand) or (cand if Path(cand).is_file() else None)
            if found:
                return found
    return None


def _hung(what: str) -> None:
    print(f"site check: {what} (the browser stopped answering); exit 3", flush=True)
    os._exit(3)


class _StallWatchdog:
    """Ends the process with exit code 3 when no page has started for `seconds`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.timer: threading.Timer | None = None

    def kick(self, rel: str) -> None:
        self.cancel()
        self.timer = threading.Timer(self.seconds, _hung, [f"{rel} took more than {self.seconds:g} s"])
        self.timer.daemon = True
        self.timer.start()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="the built site, e.g. _build/html")
    ap.add_argument("--screenshots", type=Path, help="folder for one full-page PNG per page")
    ap.add_argument("--repo", type=Path, help="the book's source folder with _config.yml (default: the parent of _build)")
    ap.add_argument("--chromium", help="the browser executable (default: $CHROMIUM, then chromium on PATH)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one page (default 30)")
    ap.add_argument("--deadline", type=float, default=600.0,
                    help="seconds for the whole check; past it the check exits with code 3 (default 600)")
    ap.add_argument("--stall", type=float, default=150.0,
                    help="seconds one page may take; past it the check exits with code 3 (default 150)")
    args = ap.parse_args(argv)

    html_dir = args.html.resolve()
    if not (html_dir / "index.html").is_file() and not any(html_dir.glob("*.html")):
        print(f"check_site: no built site in {html_dir} (run `make book` first)", file=sys.stderr)
        return 2
    repo = (args.repo or html_dir.parent.parent).resolve()
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_site: no Chromium found; install Debian's: apt-get install -y chromium", file=sys.stderr)
        return 2
    if sync_playwright is None:
        print("check_site: Playwright is missing; pip install -r requirements.txt", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    checker = SiteChecker(html_dir, repo, args.screenshots.resolve() if args.screenshots else None, chromium, args.timeout)
    # Seen rarely on a loaded 2-core machine: the browser session stops answering, with no Playwright
    # timeout to end it. Two watchdogs turn such a hang into exit code 3, which callers may retry: one
    # per page (a page normally takes 2-10 s; its own waits are each bounded by --timeout) and one for
    # the whole run.
    watchdog = threading.Timer(args.deadline, _hung, [f"no result after {args.deadline:.0f} s"])
    watchdog.daemon = True
    watchdog.start()
    stall = _StallWatchdog(args.stall)
    try:
        results = checker.run(report=lambda line: print(line, flush=True), heartbeat=stall.kick)
    finally:
        stall.cancel()
        watchdog.cancel()
    bad = [r for r in results if r.problems]
    n_problems = sum(len(r.problems) for r in results)
    print(
        f"site check: {len(results)} pages, {len(results) - len(bad)} OK, {len(bad)} with problems "
        f"({n_problems} problems) in {time.monotonic() - t0:.1f} s"
        + (f"; screenshots in {args.screenshots}" if args.screenshots else "")
    )
    return 1 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main())
