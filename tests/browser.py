"""Open an HTML report in headless Chromium (Playwright driving the system browser) and report what
a user would see: console errors, failed loads, the state of every video and image, the tables,
and a screenshot.

Chromium is Debian's ``chromium`` package (``apt-get install chromium``; ``.ci/run`` installs it),
or the executable named by ``DYNTEX_CHROMIUM``. Playwright's own browser download is not used.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

# Flags that keep Chromium from reaching for the network (it stalls on a closed one otherwise).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when there is none."""
    named = os.environ.get("DYNTEX_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


# Runs in the page: every video's readyState and whether its currentTime moves (each video is
# scrolled into view first: Chromium pauses muted autoplaying videos that are off screen).
_VIDEOS_JS = """async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const out = [];
  for (const v of document.querySelectorAll('video')) {
    v.scrollIntoView({block: 'center'});
    let t0 = performance.now();
    while (v.readyState < 2 && performance.now() - t0 < 5000) await sleep(25);
    // what it reached before playing: a looping video drops back to HAVE_METADATA for a moment
    // when it wraps, which a busy machine can catch below
    const ready = v.readyState;
    const start = v.currentTime;
    t0 = performance.now();
    while (v.currentTime === start && performance.now() - t0 < 3000) await sleep(25);
    out.push({src: v.currentSrc, readyState: ready, start: start, now: v.currentTime,
              paused: v.paused, muted: v.muted, loop: v.loop, autoplay: v.autoplay,
              error: v.error ? v.error.code : null, width: v.videoWidth});
  }
  window.scrollTo(0, 0);
  return out;
}"""

_IMAGES_JS = """async () => {
  const imgs = [...document.images];
  for (const i of imgs) { i.loading = 'eager'; }
  const t0 = performance.now();
  while (imgs.some(i => !i.complete) && performance.now() - t0 < 5000)
    await new Promise(r => setTimeout(r, 25));
  return imgs.map(i => ({src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth}));
}"""

# The visible part of each video and image on the first screen (to look at those pixels of the
# screenshot).
_BOXES_JS = """() => [...document.querySelectorAll('video, img')].map(e => {
  const r = e.getBoundingClientRect();
  const top = Math.max(0, r.top), bottom = Math.min(window.innerHeight, r.bottom);
  return {tag: e.tagName.toLowerCase(), x: r.x, y: top, w: r.width, h: bottom - top};
}).filter(b => b.w > 16 && b.h > 16)"""

_TABLES_JS = """() => [...document.querySelectorAll('table')].map(t => ({
  id: t.id, rows: [...t.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent.trim())}))"""


def inspect_page(path: Path, screenshot: Path | None = None, width: int = 1280,
                 height: int = 900) -> dict[str, Any]:
    """Load ``path`` (a local HTML file) and return what the page did.

    Keys: ``console_errors`` (console errors, uncaught exceptions, failed requests), ``videos``,
    ``images``, ``tables`` (first cell of each body row, per table), ``text`` (the page's text),
    ``screenshot`` (PNG bytes of the first screen), ``boxes`` (where its videos and images are)
    and ``seconds``.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no chromium executable found")
    t0 = time.perf_counter()
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url} {r.failure}"))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            images = page.evaluate(_IMAGES_JS)
            videos = page.evaluate(_VIDEOS_JS)
            tables = page.evaluate(_TABLES_JS)
            text = page.inner_text("body")
            boxes = page.evaluate(_BOXES_JS)
            shot = page.screenshot(path=str(screenshot) if screenshot else None)
        finally:
            browser.close()
    return {"console_errors": errors, "videos": videos, "images": images, "tables": tables,
            "text": text, "screenshot": shot, "boxes": boxes, "seconds": time.perf_counter() - t0}
