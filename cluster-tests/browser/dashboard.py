"""Drives the dashboard in Debian's Chromium (headless) with Playwright,
as an operator would use it: cluster-tests/dashboard.rs starts the
gateways and checks, on their API, what the page claims to have done.

    python3 dashboard.py --url http://127.0.0.1:PORT --token TOKEN
        --shots DIR --remote-thing ID --lamp ID
        --manifest FILE --component FILE [--big URL --day-thing ID]
        [--controller URL --controller-token TOKEN]

It prints one JSON line per step ({"step": ..., ...}); a step that fails
raises, which ends the script with a traceback and exit status 1. Each page
is also written to DIR as a screenshot.
"""

import argparse
import json
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    # This machine's network is closed: no background calls to Google.
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 20_000


def report(step, **facts):
    print(json.dumps({"step": step, **facts}), flush=True)


def count_text(page):
    return page.locator("#count").inner_text(timeout=WAIT_MS)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--shots", required=True)
    parser.add_argument("--remote-thing", required=True)
    parser.add_argument("--lamp", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--component", required=True)
    parser.add_argument("--big")
    parser.add_argument("--day-thing")
    parser.add_argument("--controller")
    parser.add_argument("--controller-token")
    args = parser.parse_args()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        # The page's Content-Security-Policy forbids eval, which
        # Playwright's wait_for_function uses: bypassed for the driver only.
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def shot(name):
            page.screenshot(path=f"{args.shots}/{name}.png", full_page=True)

        try:
            steps(args, page, shot)
        except Exception:
            # What the page showed when a step failed, for the artifacts.
            shot("failure")
            print(f"failed at {page.url}; the page said: {page.locator('main').inner_text()[:4000]}", file=sys.stderr)
            raise
        # The same pages in the dark, as a wall screen at night shows them.
        dark = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
        night = dark.new_page()
        night.goto(f"{args.url}/#/thing/{args.remote_thing}")
        night.wait_for_selector("#chart canvas", timeout=WAIT_MS)
        night.wait_for_timeout(1500)
        night.screenshot(path=f"{args.shots}/thing-dark.png", full_page=True)
        report("errors", errors=errors)
        browser.close()


def steps(args, page, shot):
    """The operator's steps, in order."""
    # The cloud: both gateways, up.
    page.goto(f"{args.url}/#/")
    page.wait_for_function("document.querySelectorAll('tr[data-gateway]').length === 2", timeout=WAIT_MS)
    states = page.locator("tr[data-gateway] td:nth-child(2)").all_inner_texts()
    page.wait_for_function(
        "[...document.querySelectorAll('td.ingest')].every(cell => cell.textContent.endsWith('readings/s'))",
        timeout=WAIT_MS)
    report("cloud", gateways=page.locator("tr[data-gateway]").count(), states=states,
           ingest=page.locator("td.ingest").all_inner_texts())
    shot("cloud")

    # By keyboard alone: from the top of the document, the first Tab
    # reaches the skip link, the next ones the pages; Enter opens one.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("Tab")
    first = page.evaluate("document.activeElement.textContent")
    tabs = 1
    while page.evaluate("document.activeElement.textContent") != "Things" and tabs < 10:
        page.keyboard.press("Tab")
        tabs += 1
    page.keyboard.press("Enter")
    page.wait_for_function("location.hash === '#/things'", timeout=WAIT_MS)
    report("keyboard", first=first, tabs=tabs, hash=page.evaluate("location.hash"))

    # The catalog of both gateways, then narrowed by a filter.
    page.goto(f"{args.url}/#/things")
    page.wait_for_function("document.querySelector('#count')?.textContent.startsWith('80 of 80')", timeout=WAIT_MS)
    report("catalog", count=count_text(page), rows=page.locator("tr[data-thing]").count())
    shot("things")
    page.select_option("select[name=type]", "temperature")
    page.wait_for_function("document.querySelector('#count')?.textContent.startsWith('16 of 80')", timeout=WAIT_MS)
    page.get_by_role("button", name="building-b", exact=True).click()
    page.wait_for_function("document.querySelector('#count')?.textContent.startsWith('8 of 80')", timeout=WAIT_MS)
    # The visible rows' latest values arrive over the multi-thing stream.
    page.wait_for_function(
        "[...document.querySelectorAll('td.latest')].every(cell => cell.textContent !== '')", timeout=WAIT_MS)
    report("filter", count=count_text(page), url=page.url,
           latest=page.locator("td.latest").all_inner_texts())
    shot("things-filtered")

    # Another gateway's thing: its chart gains points as readings come.
    page.goto(f"{args.url}/#/thing/{args.remote_thing}")
    page.wait_for_function("document.querySelector('#chart')?.dataset.points > 0", timeout=WAIT_MS)
    before = int(page.locator("#chart").get_attribute("data-points"))
    page.wait_for_function(f"document.querySelector('#chart').dataset.points > {before + 2}", timeout=WAIT_MS)
    after = int(page.locator("#chart").get_attribute("data-points"))
    report("chart", before=before, after=after, latest=page.locator("#latest").inner_text(),
           retention=page.locator("#retention").inner_text())
    shot("thing")

    # A command without a token: the page says why it failed and asks
    # for one.
    page.goto(f"{args.url}/#/thing/{args.lamp}")
    page.get_by_role("button", name="On", exact=True).click()
    page.wait_for_function("document.querySelector('#notice') && !document.querySelector('#notice').hidden", timeout=WAIT_MS)
    page.wait_for_selector("#token-dialog[open]", timeout=WAIT_MS)
    report("unauthenticated", notice=page.locator("#notice").inner_text(), asked=True)
    # The token, given once in the page's dialog.
    use_token(page, args.token, redrawn="#outcome")
    page.get_by_role("button", name="On", exact=True).click()
    page.wait_for_function("document.querySelector('#outcome')?.textContent.includes('succeeded')", timeout=WAIT_MS)
    report("lamp", outcome=page.locator("#outcome").inner_text())
    shot("lamp")

    # A service published from the page runs.
    page.goto(f"{args.url}/#/services")
    page.set_input_files("input[name=manifest]", args.manifest)
    page.set_input_files("input[name=component]", args.component)
    page.get_by_role("button", name="Publish").click()
    page.wait_for_function(
        "document.querySelector('tr[data-service] td:nth-child(3)')?.textContent === 'running'", timeout=60_000)
    name = page.locator("tr[data-service]").first.get_attribute("data-service")
    report("publish", service=name, state="running")
    shot("services")
    page.goto(f"{args.url}/#/service/{name}")
    page.wait_for_function("document.querySelector('#log')?.textContent.includes('running version')", timeout=WAIT_MS)
    report("service log", tail=page.locator("#log").inner_text().splitlines()[-1])
    shot("service")

    # Stopped, started again, and removed, from its row.
    page.goto(f"{args.url}/#/services")
    row = page.locator(f"tr[data-service='{name}']")
    seen = []
    for button, wanted in (("Stop", "stopped"), ("Start", "running")):
        row.get_by_role("button", name=button).click()
        page.wait_for_function(
            f"document.querySelector(\"tr[data-service='{name}'] td:nth-child(3)\")?.textContent === '{wanted}'",
            timeout=WAIT_MS)
        seen.append(wanted)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Remove").click()
    page.wait_for_function(f"!document.querySelector(\"tr[data-service='{name}']\")", timeout=WAIT_MS)
    seen.append("removed")
    report("service lifecycle", states=seen)

    for name in ("federation", "health"):
        page.goto(f"{args.url}/#/{name}")
        page.wait_for_timeout(4500)
        shot(name)
    report("health", summary=page.locator("main p.muted").first.inner_text())

    # A phone's width: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{args.url}/#/things")
    page.wait_for_function("document.querySelector('#count')?.textContent.includes(' of ')", timeout=WAIT_MS)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    report("phone", overflow=overflow)
    shot("things-phone")

    if args.big:
        # 10,000 thing services: the time from navigation to the first
        # page of rows, as the page measures it and as the test sees it.
        page.set_viewport_size({"width": 1280, "height": 900})
        started = time.monotonic()
        page.goto(f"{args.big}/#/things")
        page.wait_for_function("document.querySelector('#count')?.textContent.includes(' of ')", timeout=60_000)
        seen_ms = (time.monotonic() - started) * 1000
        report("big catalog", count=count_text(page), rows=page.locator("tr[data-thing]").count(),
               render_ms=int(page.locator("main").get_attribute("data-render-ms")), seen_ms=round(seen_ms))
        shot("things-10000")

        # A day of 1 Hz readings on one chart: the time until all are drawn,
        # and the longest task that held the page's main thread meanwhile.
        page.goto("about:blank")
        started = time.monotonic()
        page.goto(f"{args.big}/#/thing/{args.day_thing}?range=604800")
        page.evaluate("""() => {
            window.longest = 0;
            new PerformanceObserver(list => {
                for (const task of list.getEntries()) window.longest = Math.max(window.longest, task.duration);
            }).observe({ type: "longtask", buffered: true });
        }""")
        page.wait_for_function("document.querySelector('#chart')?.dataset.points >= 86400", timeout=60_000)
        drawn_ms = (time.monotonic() - started) * 1000
        page.wait_for_timeout(500)
        report("day chart", points=int(page.locator("#chart").get_attribute("data-points")),
               drawn_ms=round(drawn_ms), longest_task_ms=round(page.evaluate("window.longest")))
        shot("thing-day")

    if args.controller:
        # The controller's dashboard: the SDVSs of both gateways, then a
        # request placed in the form, its answer, and its data charted.
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{args.controller}/#/sdvs")
        page.wait_for_function("document.querySelectorAll('[data-sdvs]').length >= 16", timeout=WAIT_MS)
        report("controller sdvs", cards=page.locator("[data-sdvs]").count())
        shot("controller-sdvs")
        page.goto(f"{args.controller}/#/")
        page.wait_for_selector("#request-form", timeout=WAIT_MS)
        page.get_by_role("button", name="Token").click()
        use_token(page, args.controller_token, redrawn="#request-form")
        page.fill("input[name=type]", "temperature")
        page.fill("input[name=location]", "campus/building-a")
        page.fill("input[name=frequency_s]", "1")
        page.fill("input[name=period_s]", "20")
        page.select_option("select[name=action]", "read")
        page.get_by_role("button", name="Place the request").click()
        page.wait_for_selector("#outcome", timeout=WAIT_MS)
        outcome = page.locator("#outcome").inner_text()
        answer = page.locator("#answer").inner_text()
        page.locator("#answer a").click()
        page.wait_for_function(
            "[...document.querySelectorAll('[data-series] .chart, [data-series]')].some(c => c.dataset.points > 1)",
            timeout=WAIT_MS)
        request_id = int(page.url.rsplit("/", 1)[1])
        report("controller request", outcome=outcome, answer=answer, id=request_id,
               series=page.locator("[data-series]").count())
        shot("controller-request")



def use_token(page, token, redrawn):
    """Gives the open token dialog a token and waits for the page to be drawn again.

    The dialog's `close` event, which redraws the page, comes after the
    click returns: an element found before it belongs to the page being
    replaced. `redrawn` names elements the redraw makes anew."""
    page.evaluate("selector => document.querySelectorAll(selector).forEach(e => e.dataset.stale = '')", redrawn)
    page.fill("#token-input", token)
    page.get_by_role("button", name="Use it").click()
    page.wait_for_selector(f"{redrawn}:not([data-stale])", state="attached", timeout=WAIT_MS)


if __name__ == "__main__":
    sys.exit(main())
