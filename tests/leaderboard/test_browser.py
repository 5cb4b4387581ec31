"""The built board in a real headless Chromium: loads offline without console errors, sorts, links to a
defense page whose image strip decodes; screenshots are kept under pytest's tmp dir."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from iqaguard.leaderboard.site import build

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian chromium + chromium-driver at /usr/bin/chromium and /usr/bin/chromedriver"),
]


@pytest.fixture
def driver(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1400,2000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _shot(driver, path: Path) -> None:
    full = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(full["data"]))
    assert path.stat().st_size > 1000


def test_board_in_browser(board_entries, tmp_path, driver):
    from selenium.webdriver.common.by import By

    index = build(board_entries, tmp_path / "site")
    driver.get(index.resolve().as_uri())
    assert driver.title == "iqaguard leaderboard"
    table = driver.find_element(By.CSS_SELECTOR, "#suite-quick table.overview-table")

    def first_column():
        return [r.find_elements(By.TAG_NAME, "td")[0].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    before = first_column()
    assert before == ["jpeg:quality=50", "median-blur", "<script>alert(1)</script>", "no-defense"]   # markup as text
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    col = next(i for i, h in enumerate(headers) if h.text.startswith("fidelity gain"))
    headers[col].click()                                      # ascending: the worst defense first
    after = first_column()
    assert after == before[::-1]
    vals = [float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-sort"))
            for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert vals == sorted(vals) and len(set(vals)) == 4
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1       # no injected script element
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe
    _shot(driver, tmp_path / "board.png")

    # follow the link of the best defense to its page: the image strip decodes
    table.find_element(By.LINK_TEXT, "jpeg:quality=50").click()
    assert driver.find_element(By.ID, "defense-name").text == "jpeg:quality=50"
    imgs = driver.find_elements(By.CSS_SELECTOR, ".strip img")
    assert len(imgs) == 6                                      # clean / attacked / defended × 2 metrics
    for img in imgs:
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth;", img) == 96
    plots = driver.find_elements(By.CSS_SELECTOR, ".presets-plot img")     # the presets' fidelity/quality plot
    assert len(plots) == 2 and all(driver.execute_script("return arguments[0].naturalWidth;", p) > 200 for p in plots)
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe
    _shot(driver, tmp_path / "defense.png")
    print(f"screenshots: {tmp_path / 'board.png'} {tmp_path / 'defense.png'}")
