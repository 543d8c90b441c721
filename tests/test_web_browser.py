"""Headless Chromium (selenium + Debian's chromium-driver) opens the page of the bundled
simulator site as `busguard demo` serves it: tap-off rows with the simulator's values, the
alarm table, a drawn trend plot; the page load is measured and a screenshot saved to
docs/img/web.png (shown in docs/web.md). Works offline: every file comes from the unit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_demo import Lines, bundled_site_on_free_ports

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                 reason="chromium and chromium-driver (Debian) are needed")]


def web_port(site: Path) -> int:
    text = site.read_text()
    m = re.search(r"^\[web\][^\[]*?^port = (\d+)$", text, re.MULTILINE | re.DOTALL)
    assert m, "the bundled site has no [web] table"
    return int(m.group(1))


def wait_json(url: str, ok, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                last = json.load(r)
            if ok(last):
                return last
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}: condition not met in {timeout:g} s; last: {last}")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def test_the_page_shows_the_simulators_tap_offs_alarms_and_a_trend(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    site = bundled_site_on_free_ports(tmp_path)
    port = web_port(site)
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "busguard.cli", "demo", str(site), "--plain",
                             "--refresh", "1", "--scenario", "thd-rise", "--speed", "20",
                             "--duration", "120"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=site.parent)
    Lines(proc)  # drain its output
    try:
        # the simulator's THD-V rises over 4.5 %: thd-relay's BG-THD goes in the alarm table
        view = wait_json(f"{base}/api/view", lambda v: any(
            a["code"] == "BG-THD" for a in v["alarm_table"]) and v["taps"][0]["power_kw"],
            timeout=90)
        t0 = time.monotonic()
        browser.get(base + "/")
        WebDriverWait(browser, 20).until(
            lambda d: d.execute_script("return document.body.dataset.rendered === '1'"))
        wall_s = time.monotonic() - t0
        nav = browser.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return {load: n.loadEventEnd, dcl: n.domContentLoadedEventEnd,"
            " rendered: window.busguardFirstRender};")
        # works without internet: every file the page loaded came from the unit itself
        urls = browser.execute_script(
            "return [location.href].concat(performance.getEntriesByType('resource')"
            ".map(e => e.name));")
        assert len(urls) >= 3 and all(u.startswith(base + "/") for u in urls), urls
        rows = browser.find_elements(By.CSS_SELECTOR, "#taps tbody tr")
        names = [r.get_attribute("data-tap") for r in rows]
        assert names[:2] == ["pqm-a1", "pqm-a2"] and len(names) == 10
        first = rows[0]
        kw = float(first.find_element(By.CSS_SELECTOR, "[data-field=power_kw]").text)
        assert kw == pytest.approx(view["taps"][0]["power_kw"], rel=0.5)  # the simulator's
        assert 10.0 < kw < 2000.0
        assert "tap-a1" in first.text and "brk-a1" in first.text
        temp = first.find_element(By.CSS_SELECTOR, "[data-field=temp_c]").text
        assert 15.0 < float(temp) < 120.0
        codes = [r.get_attribute("data-code")
                 for r in browser.find_elements(By.CSS_SELECTOR, "#alarms tbody tr")]
        assert "BG-THD" in codes
        state = browser.find_element(By.ID, "state").text
        assert "LIVE" in state and "running" in state
        trend_ok = True
        try:
            import busguard.history  # noqa: F401
        except ImportError:
            trend_ok = False
        if trend_ok:
            # the history store holds 1 s samples; the page redraws the 1 h trend every 5 s
            WebDriverWait(browser, 45).until(lambda d: d.execute_script(
                "const c = document.getElementById('trend');"
                "return c.dataset.drawn === '1' && Number(c.dataset.samples) >= 5"))
            cv = browser.find_element(By.ID, "trend")
            assert cv.get_attribute("data-point") == "pqm-a1.power_kw"
            assert float(cv.get_attribute("data-last")) == pytest.approx(kw, rel=0.5)
            # pixels really drawn: the canvas is not blank
            blank = browser.execute_script(
                "const c = document.getElementById('trend');"
                "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                "for (let i = 3; i < d.length; i += 4) if (d[i]) return false; return true;")
            assert not blank
        out = REPO / "docs" / "img"
        out.mkdir(parents=True, exist_ok=True)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(int(height) + 200, 4000))  # the whole page
        browser.save_screenshot(str(out / "web.png"))
        (out / "web-load.json").write_text(json.dumps({
            "what": "bundled site, busguard demo --scenario thd-rise, headless Chromium on "
                    "loopback, plain HTTP; ms from navigation start",
            "load_event_ms": round(nav["load"], 1), "dom_content_loaded_ms": round(nav["dcl"], 1),
            "first_data_render_ms": round(nav["rendered"], 1),
            "wall_s_to_first_render": round(wall_s, 3)}, indent=1) + "\n")
        print(f"page load: loadEvent {nav['load']:.0f} ms, first data render "
              f"{nav['rendered']:.0f} ms")
        if not trend_ok:
            pytest.skip("rows, alarms and screenshot checked; the trend needs the history "
                        "store (busguard.history), not in this tree")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
