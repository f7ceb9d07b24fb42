"""`dcgan report RUN`: a self-contained report.html, checked as text and in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import train_tiny_run
from dcgan.cli import main
from dcgan.report import nice_ticks, svg_chart

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,2400"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = train_tiny_run(tmp_path_factory.mktemp("report") / "run")
    # what a run gains later: an evaluation line and a health warning
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "eval", "step": 4, "time": 0.0, "fid": 321.5, "kid": {"mean": 0.3, "std": 0.1},
                            "protocol": {"n_fake": 10, "extractor": "mnist-cnn-v1/mnist"}}) + "\n")
        f.write(json.dumps({"kind": "eval", "step": 6, "time": 0.0, "fid": 250.25, "kid": {"mean": 0.2, "std": 0.1},
                            "protocol": {"n_fake": 10, "extractor": "mnist-cnn-v1/mnist"}}) + "\n")
        f.write(json.dumps({"kind": "warning", "step": 6, "message": "D(x) near 1 for 3 ticks <check>"}) + "\n")
    return out


@pytest.fixture(scope="module")
def report(run):
    assert main(["report", str(run)]) == 0
    return run / "report.html"


def test_report_is_one_self_contained_file(report, run):
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # nothing is fetched from elsewhere: every src / href is a data: URI or a fragment
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', text)
    assert refs and all(r.startswith("data:") or r.startswith("#") for r in refs), [r[:40] for r in refs]
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower()
    # one thumbnail per tick grid, the animation, the final labelled grid
    grids = sorted((run / "grids").glob("step-*.png"))
    assert len(grids) == 3
    assert text.count('class="tick"') == len(grids)
    assert 'id="progress-gif"' in text and "data:image/gif;base64," in text
    assert 'id="final-grid"' in text
    # curves, evaluation, warnings (escaped), config, environment
    for needle in ("d_loss", "g_loss", "D(x)", "D(G(z))", "img/s", "FID vs images seen", "FID vs training time",
                   "kid.mean", "D(x) near 1 for 3 ticks &lt;check&gt;", "[model]", "torch", "python", "250.250"):
        assert needle in text, needle
    assert text.count("<svg") >= 5


def test_report_summary_on_stdout_and_out_option(run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["grids"] == 3 and summary["warnings"] == 1 and summary["evals"] == 2
    assert (tmp_path / "r.html").stat().st_size == summary["bytes"]


def test_report_of_a_run_without_checkpoint_or_evals(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.toml", bare / "config.toml")
    lines = [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in ln]
    (bare / "metrics.jsonl").write_text("\n".join(lines) + "\n{torn")
    assert main(["report", str(bare)]) == 0
    text = (bare / "report.html").read_text()
    assert "none readable" in text and "Evaluation" not in text


def test_report_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_svg_chart_handles_gaps_and_flat_series():
    svg = svg_chart("t", [{"name": "a", "xs": [0, 1, 2, 3], "ys": [1.0, float("nan"), 1.0, 1.0]}], "step")
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert "no data" in svg_chart("t", [{"name": "a", "xs": [], "ys": []}], "step")
    assert [round(t, 6) for t in nice_ticks(0, 1)] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 3) == [3]


# ---- in a real browser -------------------------------------------------------------------------

def find_chromium() -> tuple[str | None, str | None]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                    if shutil.which(n)), None)
    return browser, shutil.which("chromedriver")


CHECK_JS = """
const imgs = Array.from(document.images);
return JSON.stringify({n: imgs.length, complete: imgs.every(i => i.complete),
                       broken: imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.alt),
                       svgs: document.querySelectorAll('svg').length, title: document.title});
"""


def _check_with_selenium(browser: str, driver_path: str, page: Path, shot: Path, profile: Path) -> tuple[dict, list]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROME_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        result = json.loads(driver.execute_script(CHECK_JS))
        logs = driver.get_log("browser")
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    errors = [entry for entry in logs if entry.get("level") in ("SEVERE", "ERROR")]
    return result, errors


def _check_with_cli(browser: str, page: Path, shot: Path, profile: Path) -> tuple[dict, list]:
    """Without selenium: the page plus a probe script, read back with --dump-dom; a screenshot of the page itself."""
    probe = page.with_name("probe.html")
    script = ("<script>window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message||e.type)),true);"
              "const _ce=console.error;console.error=(...a)=>{window.__errors.push(a.join(' '));_ce(...a)};"
              "window.addEventListener('load',()=>{const r=(function(){" + CHECK_JS + "})();"
              "const p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify({r:JSON.parse(r),e:window.__errors});"
              "document.body.appendChild(p);});</script>")
    probe.write_text(page.read_text().replace("<head>", "<head>" + script, 1))
    flags = CHROME_FLAGS + [f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, "the probe did not run"
    import html as _html

    found = json.loads(_html.unescape(m.group(1)))
    subprocess.run([browser, *flags, f"--screenshot={shot}", page.resolve().as_uri()], capture_output=True,
                   timeout=120)
    return found["r"], found["e"]


def test_report_in_headless_chromium(report, tmp_path):
    browser, driver = find_chromium()
    if browser is None:
        pytest.skip("chromium not found (Debian: apt-get install chromium chromium-driver)")
    shot = tmp_path / "report.png"
    profile = tmp_path / "chrome-profile"  # a fresh profile every time
    try:
        import selenium  # noqa: F401

        use_selenium = driver is not None
    except ImportError:
        use_selenium = False
    if use_selenium:
        result, errors = _check_with_selenium(browser, driver, report, shot, profile)
    else:
        result, errors = _check_with_cli(browser, report, shot, profile)
    assert errors == [], errors
    assert result["n"] == 3 + 2 and result["complete"], result  # 3 thumbnails, the GIF, the final grid
    assert result["broken"] == [], result
    assert result["svgs"] >= 5
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width > 400 and im.height > 400
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # not a blank page
    if os.environ.get("DCGAN_REPORT_SHOT"):
        shutil.copy(shot, os.environ["DCGAN_REPORT_SHOT"])
