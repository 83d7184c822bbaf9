"""The HTML report rendered in headless Chromium: no horizontal overflow of the page at
1280 px, every image loads, no console or page errors; a screenshot of the first screen is saved next
to the report. The report holds the two-way intervals and the design of every comparison.

Chromium: the Debian package `chromium` (`scripts/browser/ensure_chromium.sh` installs it; `.ci/run`
calls it, and so does `make test`). Where no binary is on PATH the test skips with the true reason and
the command that installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from value_harms.analysis.report.document import write_report
from value_harms.analysis.report.findings import top_findings

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _why_no_chromium() -> str:
    """The true reason there is no browser here, and the one command that fixes it where one exists."""
    fix = "scripts/browser/ensure_chromium.sh (Debian package 'chromium'; `make test` runs it)"
    if shutil.which("apt-get") is None:
        return "no chromium on PATH and no apt-get on this machine: install a chromium binary by hand"
    root = os.geteuid() == 0
    sudo = (
        shutil.which("sudo") is not None and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    )
    if not (root or sudo):
        return "no chromium on PATH; apt-get exists but installing needs root or passwordless sudo: " + fix
    return f"no chromium on PATH, but it can be installed here (apt-get and {'root' if root else 'sudo'}): run {fix}"


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=_why_no_chromium() if CHROMIUM is None else "")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--no-first-run",
    "--mute-audio",
    "--window-size=1280,800",
]

# Injected first in <head> of a copy of the page: records page errors and console.error calls.
PROBE_HEAD = (
    "<script>window.__errs=[];addEventListener('error',function(e){__errs.push(String(e.message||"
    "(e.target&&(e.target.src||e.target.href))||'error'))},true);(function(){var c=console.error;"
    "console.error=function(){__errs.push([].join.call(arguments,' '));c.apply(console,arguments)}})();"
    "</script>"
)
# Injected at the end of <body>: the checks, written into the DOM for --dump-dom.
PROBE_TAIL = (
    "<script>addEventListener('load',function(){var imgs=[].slice.call(document.images);"
    "var r={inner:innerWidth,doc:document.documentElement.scrollWidth,body:document.body.scrollWidth,"
    "bodyClient:document.body.clientWidth,images:imgs.length,broken:imgs.filter(function(i){"
    "return !(i.complete&&i.naturalWidth>0)}).length,errors:__errs};var p=document.createElement('pre');"
    "p.id='probe';p.textContent=JSON.stringify(r);document.body.appendChild(p)})</script>"
)


def _probe(page: Path, extra_body: str = "") -> dict:
    html = page.read_text(encoding="utf-8")
    html = html.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", extra_body + PROBE_TAIL + "</body>", 1)
    copy = page.with_name(f".probe_{page.name}")
    copy.write_text(html, encoding="utf-8")
    try:
        out = subprocess.run(
            [CHROMIUM, *FLAGS, "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        copy.unlink()
    m = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"chromium produced no probe result (rc {out.returncode}): {out.stderr[-500:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from test_inference import _analyse, _study  # the same synthetic results with samples.jsonl

    root = tmp_path_factory.mktemp("browser")
    df, pv, cmp, mit = _analyse(_study(root / "results", models=2, prompts=3, samples=2, effect=0.1))
    paths = write_report(
        root / "report",
        reg=None,
        cmp=cmp,
        mit=mit,
        aln=None,
        fid=None,
        provenance={"stand_in": {"rtp": True}, "scorers": {"rtp": ["profanity_check"]}},
        findings=top_findings(None, cmp, mit),
    )
    return paths["report.html"]


@needs_chromium
def test_report_renders_in_chromium(report):
    page = report.read_text(encoding="utf-8")
    # the inference and design are in the page, next to every comparison
    assert "two-way (models x prompts)" in page and "underpowered" in page
    for col in ("n_models", "n_prompts", "n_samples", "mde", "powered", "diff_low", "diff_high"):
        assert f"<th>{col}</th>" in page
    r = _probe(report)
    assert r["inner"] == 1280
    assert r["doc"] <= r["inner"] and r["body"] <= r["bodyClient"], f"horizontal overflow: {r}"
    assert r["images"] >= 2 and r["broken"] == 0, r
    assert r["errors"] == [], r["errors"]
    shot = report.with_name("report_first_screen.png")
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert shot.is_file(), out.stderr[-500:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1280, 800)


@needs_chromium
def test_the_probe_sees_overflow_broken_images_and_errors(report):
    """The checks are real: a too-wide element, a broken image and a script error are each caught."""
    r = _probe(
        report,
        '<div style="width:3000px">wide</div><img alt="x" src="data:image/png;base64,AAAA">'
        "<script>undefined_function()</script>",
    )
    assert r["doc"] > r["inner"]
    assert r["broken"] == 1
    assert any("undefined_function" in e for e in r["errors"])
