"""Open the report in a real headless Chromium: it loads offline, images decode, no console errors."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from iqaguard.report import render_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian chromium + chromium-driver at /usr/bin/chromium and /usr/bin/chromedriver "
                              "(apt-get install chromium chromium-driver)"),
]


@pytest.fixture
def driver(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1400,2400"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit Service path means selenium-manager never looks for (or downloads) a driver.
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def test_report_in_browser(tmp_path, report_inputs, driver):
    from selenium.webdriver.common.by import By

    path = render_report(out_dir=tmp_path / "report", **report_inputs)
    driver.get(path.resolve().as_uri())

    assert driver.title == "iqaguard report"
    for sid in ("summary", "tradeoff", "worst-case", "strips", "provenance"):
        assert driver.find_element(By.ID, sid).is_displayed()

    tables = driver.find_elements(By.CSS_SELECTOR, "#summary table.summary-table")
    assert len(tables) == 2  # one per metric
    rows = tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")
    summary = report_inputs["summary"]
    assert len(rows) == (summary["metric"] == "psnr").sum() == 6  # 2 attacks × 3 defenses
    # The escaped name shows as text, and no injected script ran (only our sorter is a <script>).
    assert "<script>alert(1)</script>" in tables[0].text
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1

    # Every embedded PNG decodes: 2 trade-off plots + 3 strip panels.
    imgs = driver.find_elements(By.TAG_NAME, "img")
    assert len(imgs) == 5
    for img in imgs:
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth;", img) > 0
    strip_widths = driver.execute_script(
        "return Array.from(document.querySelectorAll('#strips img')).map(i => i.naturalWidth);")
    assert strip_widths == [256, 256, 256]  # 384 px wide inputs downscaled to ≤ 256

    # The inline sorter works: click "robust abs gain" twice -> descending order of the raw values.
    headers = tables[0].find_elements(By.CSS_SELECTOR, "thead th")
    col = next(i for i, h in enumerate(headers) if h.text.startswith("robust abs gain"))
    headers[col].click()
    headers[col].click()
    vals = [float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-sort"))
            for r in tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert vals == sorted(vals, reverse=True) and len(set(vals)) == len(vals)

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe

    driver.execute_script("window.scrollTo(0, 0);")
    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 0
    # The whole page too, for looking at by eye (CI keeps tmp_path on failure).
    full = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    (tmp_path / "report_full.png").write_bytes(base64.b64decode(full["data"]))
