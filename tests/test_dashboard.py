"""The dashboard at `/` in a real browser (issue 7): Debian's headless Chromium driven by Selenium through Debian's
chromedriver (never a downloaded browser), against `usage-ledger demo` running in its own process.

It signs in with the printed ADMIN key, compares the totals the page rendered (data-* attributes) with the API's own
analytics, changes the period and the zone, pages the usage table, downloads the CSV and compares it byte for byte
with the API's, exercises the API-keys panel, the INFERENCE-key, wrong-key and server-down messages, and the layout
at 390 px. Screenshots go to pytest's tmp directory; with UPDATE_DASHBOARD_PNG=1 the 1280 px one also replaces
docs/dashboard.png (the README's picture).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import httpx
import pytest

from ledger_process import clean_env, cli, free_port, stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                "apt-get install chromium chromium-driver (.ci/run does)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60
WAIT_S = 15
DESKTOP = (1280, 900)
PHONE = (390, 844)
ANALYTICS_SECTIONS = ("daily", "models", "keyspend")
SECTIONS = ("balances", *ANALYTICS_SECTIONS, "usage", "apikeys")


# -- the server and the browser -------------------------------------------------------------------------------------

class DemoServer:
    def __init__(self, cwd: Path) -> None:
        self.cwd, self.port = cwd, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.admin_key = ""

    def start(self) -> None:
        env = clean_env()
        out_path, err_path = self.cwd / "stdout.txt", self.cwd / "stderr.txt"
        # Files, not pipes: nobody drains a pipe while the server logs.
        with out_path.open("wb") as out, err_path.open("wb") as err:
            self.process = subprocess.Popen([*cli(), "demo", "--port", str(self.port)], cwd=self.cwd, env=env,
                                            stdout=out, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT_S
        while f"serving on {self.base}" not in out_path.read_text():
            assert self.process.poll() is None, f"demo exited {self.process.returncode}: {err_path.read_text()}"
            assert time.monotonic() < deadline, f"demo not serving after {START_TIMEOUT_S} s: {err_path.read_text()}"
            time.sleep(0.1)
        self.admin_key = re.search(r"^ADMIN API key:\s+(\S+)$", out_path.read_text(), re.M)[1]

    def stop(self) -> None:
        stop(self.process)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo = DemoServer(tmp_path_factory.mktemp("dashboard-demo"))
    try:
        demo.start()
        yield demo
    finally:
        demo.stop()


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.base + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {server.admin_key}"}) as client:
        yield client


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                 f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--hide-scrollbars", "--force-prefers-reduced-motion",
                 "--lang=en-US"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "download.directory_upgrade": True,
                                              "safebrowsing.enabled": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.set_script_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


# -- helpers ---------------------------------------------------------------------------------------------------------

def wait_for(driver, condition: Callable, what: str, timeout: float = WAIT_S):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}; page states: {states(driver)}") from None


def states(driver) -> dict[str, str]:
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('section[data-state]')]"
        ".map(s => [s.id, s.dataset.state + (s.dataset.state === 'error' ? ': ' + "
        "s.querySelector('[data-status]').textContent : '')]))")


def settled(driver, sections=SECTIONS) -> None:
    """Every section has loaded (ready or empty); an error state fails the test with its message."""
    def done(d):
        now = states(d)
        errors = {k: v for k, v in now.items() if v.startswith("error")}
        assert not errors, f"sections in error: {errors}"
        return all(now.get(s) in ("ready", "empty") for s in sections)
    wait_for(driver, done, f"sections {sections} to load")


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def click(driver, css: str) -> None:
    """Clicks like a person: the element in the middle of the screen first, clear of the sticky top bar."""
    element = driver.find_element(By.CSS_SELECTOR, css)
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def set_value(driver, element_id: str, value: str) -> None:
    """Sets an input's value the way a person's edit ends: a bubbling change event."""
    js(driver, "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
               "el.dispatchEvent(new Event('change', {bubbles: true}));", element_id, value)


def exact(text: str) -> Decimal:
    return Decimal(text) if text else Decimal(0)


def analytics(api: httpx.Client, **params) -> dict:
    r = api.get("/billing/usage-analytics", params=params)
    assert r.status_code == 200, r.text
    return json.loads(r.text, parse_float=Decimal, parse_int=Decimal)


def shown_money(total: Decimal) -> str:
    """How the page rounds a total of a cent or more: half up, 2 decimals, grouped."""
    return "$" + format(total.quantize(Decimal("0.01"), ROUND_HALF_UP), ",.2f")


def assert_totals_match(driver, body: dict) -> None:
    """The totals the page rendered are the API's, to the last digit, and its rounding is the usual one."""
    days = body["byDate"]
    usd, diem = sum((d["USD"] for d in days), Decimal(0)), sum((d["DIEM"] for d in days), Decimal(0))
    daily = driver.find_element(By.ID, "daily-totals")
    assert exact(daily.get_attribute("data-total-usd")) == usd
    assert exact(daily.get_attribute("data-total-diem")) == diem
    assert daily.get_attribute("data-days") == str(len(days))
    assert daily.find_element(By.TAG_NAME, "strong").text == shown_money(usd)
    for section, rows, name in (("models", body["byModel"], "modelName"), ("keyspend", body["byKey"], "description")):
        totals = driver.find_element(By.ID, f"{section}-totals")
        assert exact(totals.get_attribute("data-total-usd")) == sum((r["totalUsd"] for r in rows), Decimal(0))
        assert exact(totals.get_attribute("data-total-diem")) == sum((r["totalDiem"] for r in rows), Decimal(0))
        names = [th.text.split("\n")[0] for th in driver.find_elements(By.CSS_SELECTOR, f"#{section}-table tbody th")]
        assert names == [r[name] for r in rows]
    # Each model's Input / Output / Cache parts, exactly.
    for model in body["byModel"]:
        chips = driver.find_elements(By.CSS_SELECTOR, f'#models-table tr[data-parts-of="{model["modelName"]}"] li.part')
        parts = {c.get_attribute("data-part"): (exact(c.get_attribute("data-usd")), exact(c.get_attribute("data-diem")))
                 for c in chips}
        assert parts == {p["type"]: (p["usd"], p["diem"]) for p in model.get("breakdown", [])}


def console_errors(driver) -> list[str]:
    """Browser console errors, except the 4xx answers this test provokes on purpose (and the server going away)."""
    expected = re.compile(r"status of 40[01]|net::ERR_CONNECTION_REFUSED|Failed to fetch")
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and not expected.search(e["message"])]


def screenshot(driver, path: Path, height: int | None = None) -> None:
    """The page at the current width, `height` px tall from the top (default: all of it)."""
    width = js(driver, "return document.documentElement.clientWidth")
    full = js(driver, "return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(height or full, full), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def sign_in(driver, server: DemoServer, key: str) -> None:
    driver.get(server.base + "/")
    field = wait_for(driver, lambda d: d.find_element(By.ID, "key-input").is_displayed()
                     and d.find_element(By.ID, "key-input"), "the sign-in form")
    field.clear()
    field.send_keys(key, Keys.ENTER)  # the keyboard alone signs in


def sign_in_error(driver) -> tuple[str, str]:
    box = wait_for(driver, lambda d: (e := d.find_element(By.ID, "signin-error")).is_displayed()
                   and e.get_attribute("data-error") and e, "a sign-in error")
    return box.get_attribute("data-error"), box.text


# -- the tests -------------------------------------------------------------------------------------------------------

def test_sign_in_says_why_a_key_is_refused_then_keeps_the_admin_key_in_session_storage_only(browser, server, api,
                                                                                              shots):
    # Assets are served from the package with a strict CSP.
    page = httpx.get(server.base + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "styles.css", "vendor/chart.umd.min.js", "vendor/LICENSE.md"):
        assert httpx.get(f"{server.base}/assets/{asset}").status_code == 200, asset
    for outside in ("/assets/%2e%2e/app.py", "/assets/..%2fapp.py", "/assets/vendor/chart.umd.min.js.map",
                    "/assets/nothing.js"):
        assert httpx.get(server.base + outside).status_code == 404, outside

    sign_in(browser, server, "ul_" + "x" * 43)
    kind, text = sign_in_error(browser)
    assert kind == "bad-key" and "not accepted" in text

    created = api.post("/api_keys", json={"apiKeyType": "INFERENCE", "description": "dashboard test inference"})
    assert created.status_code == 200, created.text
    sign_in(browser, server, created.json()["data"]["apiKey"])
    kind, text = sign_in_error(browser)
    assert kind == "inference-key" and "INFERENCE key" in text and "ADMIN key" in text
    screenshot(browser, shots / "signin-inference-key.png")
    assert js(browser, "return sessionStorage.getItem('usage-ledger.adminKey')") is None

    sign_in(browser, server, server.admin_key)
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "dashboard",
             "the dashboard")
    settled(browser)
    assert js(browser, "return sessionStorage.getItem('usage-ledger.adminKey')") == server.admin_key
    assert js(browser, "return localStorage.length") == 0
    assert js(browser, "return document.cookie") == ""
    assert server.admin_key not in browser.current_url
    assert browser.find_element(By.ID, "key-chip").text.endswith(server.admin_key[-6:])
    # The balances are the API's.
    balance = api.get("/billing/balance").json(parse_float=Decimal)
    for name, value in balance["balances"].items():
        card = browser.find_element(By.CSS_SELECTOR, f'[data-balance="{name}"]')
        assert exact(card.get_attribute("data-exact")) == value
    # A reload stays signed in (sessionStorage), without asking again.
    browser.refresh()
    settled(browser)
    assert console_errors(browser) == []


def test_charts_totals_equal_the_apis_for_every_period_and_zone(browser, server, api, shots):
    settled(browser)
    zone = Select(browser.find_element(By.ID, "timezone")).first_selected_option.get_attribute("value")
    assert_totals_match(browser, analytics(api, lookback="7d", timezone=zone))
    screenshot(browser, shots / "desktop-7d.png")

    # 30 days, in a zone whose days do not start at a whole UTC hour.
    Select(browser.find_element(By.ID, "timezone")).select_by_value("Asia/Kolkata")
    click(browser, "label[for=period-30d]")
    settled(browser)
    body = analytics(api, lookback="30d", timezone="Asia/Kolkata")
    wait_for(browser, lambda d: d.find_element(By.ID, "daily-totals").get_attribute("data-days") == "30", "30 days")
    assert_totals_match(browser, body)
    assert browser.find_element(By.ID, "period-label").get_attribute("data-lookback") == "30d"
    # The DIEM, bundled-credit and USD phases of the demo month all show: both currencies were spent.
    assert sum(d["DIEM"] for d in body["byDate"]) > 0 and sum(d["USD"] for d in body["byDate"]) > 0

    # Splitting the days by model or by key redraws without a request and keeps the totals.
    for split in ("model", "key", "currency"):
        click(browser, f'#daily [data-split="{split}"]')
        assert browser.find_element(By.CSS_SELECTOR, f'#daily [data-split="{split}"]').get_attribute(
            "aria-pressed") == "true"
    assert_totals_match(browser, body)

    # Custom dates, UTC.
    Select(browser.find_element(By.ID, "timezone")).select_by_value("UTC")
    first, last = body["byDate"][3]["date"], body["byDate"][12]["date"]
    click(browser, "label[for=period-custom]")
    settled(browser)
    set_value(browser, "range-start", first)
    set_value(browser, "range-end", last)
    click(browser, "#range-apply")
    wait_for(browser, lambda d: d.find_element(By.ID, "period-label").get_attribute("data-lookback")
             == f"{first}:{last}", "the custom period")
    settled(browser, ANALYTICS_SECTIONS)
    assert_totals_match(browser, analytics(api, startDate=first, endDate=last, timezone="UTC"))

    # A range the API refuses is caught before asking.
    set_value(browser, "range-start", "2026-01-01")
    set_value(browser, "range-end", "2026-06-30")
    click(browser, "#range-apply")
    assert "at most 90 days" in browser.find_element(By.ID, "range-error").text

    click(browser, "label[for=period-30d]")
    settled(browser)
    assert_totals_match(browser, analytics(api, lookback="30d", timezone="UTC"))
    assert console_errors(browser) == []


def test_usage_table_pages_and_downloads_exactly_the_apis_csv(browser, server, api, downloads):
    settled(browser)
    Select(browser.find_element(By.ID, "usage-limit")).select_by_value("25")
    settled(browser)
    page1 = api.get("/billing/usage", params={"limit": 25, "page": 1, "sortOrder": "desc"}).json()
    summary = browser.find_element(By.ID, "usage-summary")
    assert summary.get_attribute("data-total") == str(page1["pagination"]["total"])
    assert summary.get_attribute("data-total-pages") == str(page1["pagination"]["totalPages"])

    def first_times() -> list[str]:
        return [t.get_attribute("datetime") for t in browser.find_elements(By.CSS_SELECTOR, "#usage-table tbody time")]

    assert first_times() == [row["timestamp"] for row in page1["data"]]
    click(browser, '#usage-pager [data-page="next"]')
    wait_for(browser, lambda d: d.find_element(By.ID, "usage-summary").get_attribute("data-page") == "2", "page 2")
    settled(browser, ("usage",))
    page2 = api.get("/billing/usage", params={"limit": 25, "page": 2, "sortOrder": "desc"}).json()
    assert first_times() == [row["timestamp"] for row in page2["data"]]
    click(browser, '#usage-pager [data-page="last"]')
    last_page = str(page1["pagination"]["totalPages"])
    wait_for(browser, lambda d: d.find_element(By.ID, "usage-summary").get_attribute("data-page") == last_page,
             "the last page")
    settled(browser, ("usage",))
    assert len(first_times()) == page1["pagination"]["total"] - 25 * (page1["pagination"]["totalPages"] - 1)

    # Filters: a currency, whole UTC days, oldest first, 100 a page, page 2.
    days = analytics(api, lookback="30d", timezone="UTC")["byDate"]
    first, last = days[10]["date"], days[25]["date"]
    Select(browser.find_element(By.ID, "usage-currency")).select_by_value("USD")
    Select(browser.find_element(By.ID, "usage-sort")).select_by_value("asc")
    Select(browser.find_element(By.ID, "usage-limit")).select_by_value("100")
    set_value(browser, "usage-start", first)
    set_value(browser, "usage-end", last)
    settled(browser, ("usage",))
    click(browser, '#usage-pager [data-page="next"]')
    wait_for(browser, lambda d: d.find_element(By.ID, "usage-summary").get_attribute("data-page") == "2", "page 2")
    settled(browser, ("usage",))
    query = dict(parse_qsl(browser.find_element(By.ID, "usage-table").get_attribute("data-query")))
    assert query == {"limit": "100", "page": "2", "sortOrder": "asc", "currency": "USD",
                     "startDate": f"{first}T00:00:00.000Z", "endDate": f"{last}T23:59:59.999Z"}
    filtered = api.get("/billing/usage", params=query).json()
    assert filtered["pagination"]["total"] > 100, "the demo's filtered rows should fill more than a page"
    assert first_times() == [row["timestamp"] for row in filtered["data"]]

    click(browser, "#download-csv")
    target = downloads / "billing_usage.csv"
    wait_for(browser, lambda d: target.exists() and not list(downloads.glob("*.crdownload")), "the CSV download")
    expected = api.get("/billing/usage", params=query, headers={"Accept": "text/csv"})
    assert expected.status_code == 200 and expected.headers["content-type"].startswith("text/csv")
    assert target.read_bytes() == expected.content
    assert expected.content.count(b"\r\n") == len(filtered["data"]) + 1
    assert browser.find_element(By.ID, "download-csv").get_attribute("data-downloaded") == "billing_usage.csv"

    # An empty result is said so, with a way out.
    set_value(browser, "usage-start", "2001-01-01")
    set_value(browser, "usage-end", "2001-01-02")
    wait_for(browser, lambda d: d.find_element(By.ID, "usage").get_attribute("data-state") == "empty", "empty state")
    assert "No usage records match" in browser.find_element(By.CSS_SELECTOR, "#usage [data-status]").text
    click(browser, "#usage [data-status] button")
    wait_for(browser, lambda d: d.find_element(By.ID, "usage-summary").get_attribute("data-total")
             == str(page1["pagination"]["total"]), "the filters to clear")
    assert console_errors(browser) == []


def test_api_keys_panel_creates_with_the_secret_shown_once_and_revokes(browser, server, api):
    settled(browser)
    before = {k["id"] for k in api.get("/api_keys").json()["data"]}
    rows = browser.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr")
    assert {r.get_attribute("data-key-id") for r in rows} == before

    browser.find_element(By.ID, "new-key-description").send_keys("made in the dashboard")
    Select(browser.find_element(By.ID, "new-key-type")).select_by_value("INFERENCE")
    click(browser, "#create-key-submit")
    dialog = wait_for(browser, lambda d: (e := d.find_element(By.ID, "secret-dialog")).is_displayed() and e,
                      "the new key's secret")
    secret = browser.find_element(By.ID, "secret-value").get_attribute("value")
    key_id = dialog.get_attribute("data-key-id")
    assert secret.startswith("ul_") and len(secret) > 40
    # The secret is a real INFERENCE key of this user: the API says so.
    refused = httpx.get(f"{server.base}/api/v1/billing/balance", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401 and refused.json() == {"error": "Admin API key required"}
    browser.find_element(By.ID, "secret-done").send_keys(Keys.ENTER)
    wait_for(browser, lambda d: not d.find_element(By.ID, "secret-dialog").is_displayed(), "the dialog to close")
    assert browser.find_element(By.ID, "secret-value").get_attribute("value") == ""  # shown once, then gone
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#keys-table tr[data-key-id="{key_id}"]'),
             "the new key in the list")
    assert secret not in browser.page_source

    click(browser, f'#keys-table tr[data-key-id="{key_id}"] button')
    wait_for(browser, lambda d: d.find_element(By.ID, "confirm-dialog").is_displayed(), "the confirmation")
    assert "made in the dashboard" in browser.find_element(By.ID, "confirm-text").text
    assert not browser.find_element(By.ID, "confirm-self").is_displayed()
    click(browser, "#confirm-revoke")
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, f'#keys-table tr[data-key-id="{key_id}"]'),
             "the key to leave the list")
    settled(browser, ("apikeys",))
    assert {k["id"] for k in api.get("/api_keys").json()["data"]} == before
    # The key this tab signed in with is marked, and revoking it would say so.
    own = browser.find_element(By.XPATH, "//table[@id='keys-table']//tr[.//*[contains(@class, 'pill-self')]]")
    js(browser, "arguments[0].scrollIntoView({block: 'center'})", own)
    own.find_element(By.TAG_NAME, "button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "confirm-self").is_displayed(), "the own-key warning")
    click(browser, "#confirm-cancel")
    wait_for(browser, lambda d: not d.find_element(By.ID, "confirm-dialog").is_displayed(), "cancel")
    assert len(api.get("/api_keys").json()["data"]) == len(before)
    assert console_errors(browser) == []


def test_layout_at_390_and_1280_px_wide(browser, server, shots):
    settled(browser)
    try:
        browser.set_window_size(*PHONE)
        wait_for(browser, lambda d: js(d, "return innerWidth") == PHONE[0], "a 390 px viewport")
        settled(browser)

        def overflow(d) -> list:
            return js(d, """
                const width = document.documentElement.clientWidth;
                return [document.documentElement.scrollWidth, width,
                        [...document.querySelectorAll('body *')].filter(el => {
                            const r = el.getBoundingClientRect();
                            return r.width && (r.right > width + 1 || r.left < -1) && !el.closest('.table-wrap')
                                   && getComputedStyle(el).position !== 'absolute';
                        }).map(el => el.tagName + '#' + el.id + '.' + el.className).slice(0, 5)];""")

        # Chart.js redraws its canvases on a resize observer, a few frames after the viewport changes: wait for it.
        try:
            wait_for(browser, lambda d: (o := overflow(d))[0] <= o[1] and o[2] == [], "the page to fit 390 px")
        except AssertionError:
            raise AssertionError(f"horizontal overflow at 390 px: {overflow(browser)}") from None
        js(browser, "window.scrollTo(0, 0)")
        screenshot(browser, shots / "phone.png")
    finally:
        browser.set_window_size(*DESKTOP)
    wait_for(browser, lambda d: js(d, "return innerWidth") == DESKTOP[0], "a 1280 px viewport")
    settled(browser)
    assert js(browser, "return document.documentElement.scrollWidth") <= DESKTOP[0]
    js(browser, "window.scrollTo(0, 0)")
    bottom = js(browser, "return Math.ceil(document.getElementById('models').getBoundingClientRect().bottom + 12)")
    screenshot(browser, shots / "desktop.png", height=bottom)
    if os.environ.get("UPDATE_DASHBOARD_PNG") == "1":
        screenshot(browser, ROOT / "docs" / "dashboard.png", height=bottom)
    # Keyboard: the controls are real inputs and buttons, in the tab order, with a visible focus style.
    js(browser, "document.getElementById('timezone').focus()")
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert js(browser, "return document.activeElement.id") == "refresh"
    assert js(browser, "return getComputedStyle(document.activeElement).outlineStyle") != "none"


def test_a_server_that_is_down_is_said_so(browser, server, shots):
    settled(browser)
    server.stop()
    click(browser, "#refresh")
    banner = wait_for(browser, lambda d: (e := d.find_element(By.ID, "banner")).is_displayed() and e, "the banner")
    assert "Cannot reach the usage-ledger server" in banner.text
    assert "error" in states(browser)["balances"]
    # Sign-in says the same rather than blaming the key.
    click(browser, "#sign-out")
    field = browser.find_element(By.ID, "key-input")
    field.send_keys(server.admin_key, Keys.ENTER)
    kind, text = sign_in_error(browser)
    assert kind == "offline" and "Cannot reach" in text
    screenshot(browser, shots / "signin-server-down.png")
    assert js(browser, "return sessionStorage.getItem('usage-ledger.adminKey')") is None
