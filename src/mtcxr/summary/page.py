"""Helpers of `snakemake --report`: summary.md as an HTML page, and the headless-browser check of the
built report (used by tests/test_report.py and to take the README's screenshot).

Snakemake's report is a single-page React app that renders from data embedded in the HTML file, so a
report that builds can still show nothing. `check_in_browser` opens it in headless Chromium with a
small script appended that visits every registered result as a reader would (its category, its
caption, the image or page itself) and writes what it found into the DOM, which `--dump-dom` returns:
no DevTools connection needed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

# Tables are wide (a column per metric): numbers stay on one line and the table scrolls sideways; only
# long text cells (report examples) wrap.
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; font-size: 14px;
       line-height: 1.45; color: #1f2937; margin: 1.5em; max-width: 110em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #d1d5db; }
h3 { font-size: 1.1em; margin-top: 1.3em; }
p { max-width: 60em; }
code { background: #f3f4f6; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
.table { overflow-x: auto; margin: .6em 0 1.2em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #d1d5db; padding: .3em .55em; vertical-align: top; text-align: left; }
th { background: #f3f4f6; }
td { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { white-space: normal; min-width: 22em; max-width: 40em; }
tr:nth-child(even) td { background: #fafafa; }
"""


def _inline(text: str) -> str:
    """HTML of one line of Markdown text: `code`, **bold**, everything else escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row `| a | b |` (a `\\|` stays in its cell)."""
    body = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body)]


def _cell(text: str) -> str:
    """A table cell; one of running text (over 60 characters) may wrap, a number stays on one line."""
    return f'<td class="text">{_inline(text)}</td>' if len(text) > 60 else f"<td>{_inline(text)}</td>"


def _is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", line.strip()))


def markdown_to_html(text: str, title: str = "mtcxr results") -> str:
    """A standalone HTML page of the Markdown subset summary.md uses: ATX headings, paragraphs, pipe
    tables (header, rule, rows) and inline `code` / **bold**. Anything else is kept as escaped text."""
    lines = text.splitlines()
    body: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            body.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            flush()
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2).strip())}</h{level}>")
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            flush()
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in header)
            rows_html = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
            body.append(
                f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table></div>'
            )
            continue
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def summary_html(markdown_path: str | Path, output: str | Path) -> None:
    """Write summary.md as a standalone HTML page (what `snakemake --report` shows as the summary)."""
    text = Path(markdown_path).read_text(encoding="utf-8")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(markdown_to_html(text), encoding="utf-8")


# --- headless browser -------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Installed before the report's own scripts: every uncaught error and console.error is recorded.
_CATCH = """<script>
window.__mtcxr_errors = [];
window.addEventListener("error", function (event) { window.__mtcxr_errors.push("error: " + event.message); });
window.addEventListener("unhandledrejection", function (event) {
  window.__mtcxr_errors.push("unhandled rejection: " + String(event.reason)); });
(function () { var original = console.error; console.error = function () {
  window.__mtcxr_errors.push("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
  return original.apply(console, arguments); }; })();
</script>"""

# Appended after the report's scripts. MODE "check" drives the app through its own methods and the
# menu's links, as a reader clicks, waits for React to render by polling the DOM, and writes what it
# found into <pre id="mtcxr-check">. MODE {"show": path} opens that result in its subcategory (for a
# screenshot); MODE null leaves the landing page as it loads.
_VISIT = """<script>
const MODE = __MODE__;
const out = {errors: window.__mtcxr_errors, landing: "", landing_title: null, categories: {}, results: {}};
function writeOut() {  // what the check found, for --dump-dom; written also when the check itself fails
  out.window = {width: window.innerWidth, height: window.innerHeight};
  const pre = document.createElement("pre");
  pre.id = "mtcxr-check";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}
(async function () {
  const tick = () => new Promise(resolve => setTimeout(resolve, 20));
  async function until(condition) {  // polls under Chromium's virtual time; gives up after 200 ticks
    for (let i = 0; i < 200; i++) { const value = condition(); if (value) return value; await tick(); }
    return null;
  }
  const text = () => document.querySelector("#app").innerText;
  const placeOf = path => {
    for (const category of Object.keys(categories)) {
      for (const subcategory of Object.keys(categories[category])) {
        if (categories[category][subcategory].includes(path)) return [category, subcategory];
      }
    }
    return [undefined, undefined];
  };
  const kindOf = entry => entry.mime_type.startsWith("image/") ? "img" : (entry.mime_type === "text/html" ? "html" : "");
  // What a reader sees of an element in the window: its box, clipped where it starts outside.
  const box = node => { const r = node.getBoundingClientRect(); return {top: r.top, left: r.left, width: r.width, height: r.height}; };
  // The app renders asynchronously (React's createRoot): `app` exists once the first render ran.
  await until(() => typeof app !== "undefined" && document.querySelector("nav"));
  if (MODE === null) return;
  if (MODE.show) {
    const [category, subcategory] = placeOf(MODE.show);
    const entry = results[MODE.show];
    app.setView({navbarMode: "subcategory", category: category, subcategory: subcategory});
    await tick();
    app.setView({navbarMode: "subcategory", content: kindOf(entry), contentPath: entry.data_uri, resultPath: MODE.show});
    return;
  }
  const prose = await until(() => document.querySelector(".prose") && document.querySelector("#rulegraph canvas, #rulegraph svg")
                                  && document.querySelector(".prose"));
  if (prose) {
    out.landing = prose.innerText;
    out.landing_title = prose.querySelector("h1") ? box(prose.querySelector("h1")) : null;
  }
  // The menu, a category, a subcategory, back to the menu (so that React mounts each list afresh).
  // A result counts as listed when its label values, or its path, show.
  const menuLink = label => Array.from(document.querySelectorAll("nav a")).find(a => a.innerText.trim() === label);
  for (const category of Object.keys(categories)) {
    const shown = {};
    for (const subcategory of Object.keys(categories[category])) {
      app.setView({navbarMode: "menu"});
      const link = await until(() => menuLink(category));
      if (!link) { shown[subcategory] = []; continue; }
      link.click();
      if (Object.keys(categories[category]).length > 1) {
        const sub = await until(() => menuLink(subcategory));
        if (sub) sub.click();
      }
      const paths = categories[category][subcategory];
      const listed = path => results[path].labels ? Object.values(results[path].labels).every(v => text().includes(String(v)))
                                                  : text().includes(path);
      await until(() => paths.every(listed));
      shown[subcategory] = paths.filter(listed).map(path => results[path].name);
    }
    out.categories[category] = shown;
  }
  for (const [path, entry] of Object.entries(results)) {
    const [category, subcategory] = placeOf(path);
    app.setView({navbarMode: "menu"});
    await tick();
    app.showResultInfo(path);
    const caption = document.createElement("div");
    caption.innerHTML = entry.caption;
    const start = caption.innerText.trim().slice(0, 60);
    const record = {name: entry.name, mime: entry.mime_type, caption: caption.innerText.trim(),
                    caption_shown: !!(await until(() => start && text().includes(start)))};
    const kind = kindOf(entry);
    if (kind) {  // shown as the eye icon of its subcategory's list shows it
      app.setView({navbarMode: "subcategory", category: category, subcategory: subcategory});
      await tick();
      app.setView({navbarMode: "subcategory", content: kind, contentPath: entry.data_uri, resultPath: path});
    }
    if (kind === "img") {
      const image = await until(() => Array.from(document.querySelectorAll("img")).find(
        node => node.getAttribute("src") === entry.data_uri && node.complete && node.naturalWidth > 0));
      record.width = image ? image.naturalWidth : 0;
      record.height = image ? image.naturalHeight : 0;
      record.box = image ? box(image) : null;
    } else if (kind === "html") {
      const frame = await until(() => Array.from(document.querySelectorAll("iframe")).find(
        node => node.getAttribute("src") === entry.data_uri));
      record.frame = !!frame;
      const page = new DOMParser().parseFromString(
        new TextDecoder().decode(Uint8Array.from(atob(entry.data_uri.split(",")[1]), c => c.charCodeAt(0))), "text/html");
      record.tables = page.querySelectorAll("table").length;
      record.headings = Array.from(page.querySelectorAll("h1, h2, h3")).map(node => node.textContent);
    }
    out.results[path] = record;
  }
  writeOut();
})().catch(error => {
  window.__mtcxr_errors.push("check script: " + error);
  if (MODE === "check") writeOut();
});
</script>"""


def find_browser() -> str | None:
    """The path of a Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _harness(report: Path, target: Path, mode: object) -> None:
    page = report.read_text(encoding="utf-8")
    if "<head>" not in page or "</body>" not in page:
        raise ValueError(f"{report} is not a Snakemake HTML report (no <head> or </body>)")
    page = page.replace("<head>", "<head>" + _CATCH, 1)
    end = page.rindex("</body>")
    page = page[:end] + _VISIT.replace("__MODE__", json.dumps(mode)) + page[end:]
    target.write_text(page, encoding="utf-8")


def _run_browser(
    browser: str, page: Path, *mode: str, size: tuple[int, int] = (1600, 1000)
) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium refuses its sandbox; the page is a local file.
    # The virtual time budget lets the app's timers run to the end without waiting in real time.
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=60000",
        *mode,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def console_errors(stderr: str) -> list[str]:
    """The page's console messages in Chromium's stderr log that report a script error."""
    messages = re.findall(r':CONSOLE[^\]]*\] "(.*?)", source:', stderr)
    return [message for message in messages if re.search(r"\b(Uncaught|Error|TypeError|ReferenceError)\b", message)]


def check_in_browser(
    report: str | Path, work_dir: str | Path, size: tuple[int, int] = (1600, 1000), browser: str | None = None
) -> dict:
    """Open `report` in headless Chromium, visit every result and return what the page showed:
    {"errors": uncaught errors and console.error calls, "console_errors": script errors in Chromium's log,
    "landing": text of the workflow description, "landing_title": its title's box in the window,
    "categories": {category: {subcategory: [result names listed]}}, "results": {path: {"caption_shown",
    and for an image its natural "width"/"height" and displayed "box", for a page its "tables"/"headings"}},
    "window": the window's inner size}. Boxes are in CSS pixels of a `size` browser window."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found on PATH (" + ", ".join(BROWSERS) + ")")
    page = Path(work_dir) / "report_check.html"
    _harness(Path(report), page, "check")
    done = _run_browser(browser, page, "--dump-dom", size=size)
    found = re.search(r'<pre id="mtcxr-check"[^>]*>(.*?)</pre>', done.stdout, re.S)
    if done.returncode != 0 or found is None:
        console = "\n".join(line for line in done.stderr.splitlines() if ":CONSOLE" in line) or done.stderr[-2000:]
        raise RuntimeError(f"the browser check of {report} wrote no result (exit {done.returncode}): {console}")
    result = json.loads(html.unescape(found.group(1)))
    result["console_errors"] = console_errors(done.stderr)
    return result


def screenshot(
    report: str | Path,
    output: str | Path,
    work_dir: str | Path,
    show: str | None = None,
    size: tuple[int, int] = (1600, 1000),
    browser: str | None = None,
) -> None:
    """A PNG of `report` as a reader sees it: the landing page, or with `show` (a result's path as
    registered) that result opened in its subcategory with its caption."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found on PATH (" + ", ".join(BROWSERS) + ")")
    if show is not None and f'"{show}":' not in Path(report).read_text(encoding="utf-8"):
        raise ValueError(f"{show} is not a result of {report}; give its path as registered (e.g. results/figures/…)")
    page = Path(work_dir) / "report_screenshot.html"
    _harness(Path(report), page, {"show": show} if show else None)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    done = _run_browser(browser, page, f"--screenshot={Path(output).resolve()}", size=size)
    if done.returncode != 0 or not Path(output).is_file():
        raise RuntimeError(
            f"the browser wrote no screenshot of {report} (exit {done.returncode}): {done.stderr[-2000:]}"
        )


if __name__ == "__main__":  # python -m mtcxr.summary.page REPORT.html OUT.png [RESULT_PATH]: the README's screenshot
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        screenshot(sys.argv[1], sys.argv[2], scratch, show=sys.argv[3] if len(sys.argv) > 3 else None)
