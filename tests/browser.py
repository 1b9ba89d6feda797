"""A real headless Chromium for the playground's tests (tests/test_ui.py): Debian's ``chromium`` driven through
its ``chromedriver`` by Selenium, with the console and the network read back after each step.

Chromium's background services (updates, sync, safe browsing, field trials) try to reach Google at start; on a
machine with no network their connections are refused and logged, so they are switched off. The window is an
emulated 1280×900 viewport at device scale 1, so screenshots have a fixed size on any host.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SIZE = (1280, 900)
BROWSER_OWN = ("chrome://", "chrome-untrusted://")  # the browser's own pages (a new tab's), not the network
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def require_chromium() -> None:
    """Fail (never skip) when the browser is missing: CI must run these tests."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the playground's tests drive Debian's chromium through chromedriver. "
            "`make test` installs them as root; by hand: apt-get install -y chromium chromium-driver",
            pytrace=False,
        )


@dataclass
class Browser:
    """A Chrome session on ``origin``; ``problems()`` drains the logs: console errors and failed requests."""

    driver: Any  # selenium's Chrome WebDriver
    origin: str
    profile: Path
    pending: dict[str, str] = field(default_factory=dict, repr=False)  # request id -> URL

    @classmethod
    def start(cls, origin: str) -> Browser:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        require_chromium()
        profile = Path(tempfile.mkdtemp(prefix="nnserve-chromium-"))
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={SIZE[0]},{SIZE[1]}"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        browser = cls(driver, origin, profile)
        browser.viewport()
        return browser

    def viewport(self) -> None:
        metrics = {"width": SIZE[0], "height": SIZE[1], "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    # ---- what the tests do with it ----

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def text(self, element_id: str) -> str:
        return self.driver.find_element("id", element_id).text

    def wait(self, ready: Callable[[Any], Any], what: str, timeout: float = 20.0) -> Any:
        """ready(driver)'s first truthy value, or an AssertionError naming ``what`` and the problems seen."""
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(ready)
        except Exception as exc:
            raise AssertionError(f"waited {timeout}s for {what}; problems: {self.problems()}") from exc

    def wait_text(self, element_id: str, part: str, timeout: float = 20.0) -> str:
        """The element's text, once it contains ``part``."""
        return self.wait(lambda d: part in (t := d.find_element("id", element_id).text) and t, repr(part), timeout)

    def tab(self, name: str) -> None:
        self.driver.find_element("id", f"tab-{name}").click()
        self.wait(lambda d: d.find_element("id", f"panel-{name}").is_displayed(), f"the {name} panel")

    def stroke(self, element: Any, points: list[tuple[float, float]], kind: str = "mouse") -> None:
        """One stroke through ``points`` (pixels from the element's top left corner) as real pointer input of
        a mouse, a pen or a finger (touch), with pointer moves every few pixels along each segment."""
        from selenium.webdriver.common.actions import interaction
        from selenium.webdriver.common.actions.action_builder import ActionBuilder
        from selenium.webdriver.common.actions.pointer_input import PointerInput

        kinds = {"mouse": interaction.POINTER_MOUSE, "pen": interaction.POINTER_PEN, "touch": interaction.POINTER_TOUCH}
        actions = ActionBuilder(self.driver, mouse=PointerInput(kinds[kind], kind), duration=10)
        cx, cy = element.rect["width"] / 2, element.rect["height"] / 2  # moves are relative to the centre
        actions.pointer_action.move_to(element, int(points[0][0] - cx), int(points[0][1] - cy)).pointer_down()
        for (xa, ya), (xb, yb) in itertools.pairwise(points):
            for t in (i / 8 for i in range(1, 9)):
                actions.pointer_action.move_to(element, int(xa + t * (xb - xa) - cx), int(ya + t * (yb - ya) - cy))
        actions.pointer_action.pointer_up()
        actions.perform()

    def pixels(self, css: str) -> list[list[int]]:
        """The decoded RGBA pixels of every image matched, read back through a canvas."""
        return self.driver.execute_script(
            """return [...document.querySelectorAll(arguments[0])].map((img) => {
                 const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                 const x = c.getContext('2d'); x.drawImage(img, 0, 0);
                 return Array.from(x.getImageData(0, 0, c.width, c.height).data); });""",
            css,
        )

    def screenshot(self, path: Path, top: str | None = None) -> None:
        """The viewport (SIZE) from the page's top, or from element ``top`` (CSS), with no focus ring."""
        self.driver.execute_script(
            "document.activeElement.blur(); const e = arguments[0] && document.querySelector(arguments[0]);"
            "e ? e.scrollIntoView() : window.scrollTo(0, 0)",
            top,
        )
        self.driver.save_screenshot(str(path))

    def problems(self) -> list[str]:
        """Console errors (SEVERE) and requests that failed, went elsewhere or answered >= 400, since the last
        call."""
        out = [f"console: {e['message']}" for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            if msg["method"] == "Network.requestWillBeSent":
                url = params["request"]["url"]
                self.pending[params["requestId"]] = url
                if not url.startswith((self.origin + "/", "data:", "blob:", *BROWSER_OWN)):
                    out.append(f"request elsewhere: {url}")
            elif msg["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
                out.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
            elif msg["method"] == "Network.loadingFailed" and not params.get("canceled"):
                url = self.pending.get(params["requestId"])  # None: the browser's own request, not the page's
                if url is not None:
                    out.append(f"failed: {url} ({params.get('errorText')})")
        return out


# WCAG 2.x contrast of every visible text node's element against its effective background (the first opaque
# ancestor background, with translucent ones composited over it): [ratio, needed, text, colour, background]
CONTRAST_JS = """
const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
const lum = ([r, g, b]) => 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3]));
function background(el) {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  let bg = [255, 255, 255];
  for (const c of layers.reverse()) bg = over(c, bg);
  return bg;
}
const out = [];
const walker = document.createTreeWalker(arguments[0], NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (!n.textContent.trim() || !el.checkVisibility() || el.closest(".visually-hidden, [disabled], option")) continue;
  const s = getComputedStyle(el);
  const bg = background(el);
  const fg = over(parse(s.color), bg);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  const size = parseFloat(s.fontSize), bold = Number(s.fontWeight) >= 700;
  const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  out.push([(a + 0.05) / (b + 0.05), needed, n.textContent.trim().slice(0, 40), s.color, bg.join(",")]);
}
return out;
"""

# every visible form control and button with its accessible name (label, aria-label or text), and every
# visible image with its alt text
NAMES_JS = """
const named = (el) => (el.labels && el.labels.length && [...el.labels].map((l) => l.textContent).join(" ").trim())
  || el.getAttribute("aria-label") || (["BUTTON", "SUMMARY"].includes(el.tagName) && el.textContent.trim()) || "";
const root = arguments[0];
const controls = [...root.querySelectorAll("input, select, textarea, button, canvas, summary")]
  .filter((el) => el.checkVisibility() || el.classList.contains("visually-hidden"))
  .map((el) => [el.id || el.tagName, named(el)]);
const images = [...root.querySelectorAll("img")].filter((el) => el.checkVisibility())
  .map((el) => [el.id || "img", el.alt]);
return [controls, images];
"""
