"""`pricelab report`: the readout of a real chain, opened in a real headless browser.

The browser is Debian's Chromium (``.ci/run`` installs it when missing); where no browser
exists the browser test is skipped with a message saying so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import math
import os
import re
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.report import fmt, p_text, pct
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, run_cli_module):
    """A small random-days experiment run through design, assign, hpte (with the placebo)
    and report, as a user would on files."""
    folder = tmp_path_factory.mktemp("report")
    products, _ = simulate_catalog(120, 4, 5, seed=3)
    products.write_csv(folder / "products.csv")
    design = make_design("random-days", salt="report", start=START, end=START + dt.timedelta(days=20))
    result = run_cli_module(
        "design",
        "random-days",
        "--start",
        str(START),
        "--end",
        str(START + dt.timedelta(days=20)),
        "--salt",
        "report",
        "-o",
        folder / "design.json",
    )
    assert result.code == 0, result.stderr
    assignment = assign(design, products)
    assignment.write_parquet(folder / "assignment.parquet")
    sim = simulate_sales(products, assignment=assignment, history_days=63, seed=3)
    sim.sales.write_parquet(folder / "sales.parquet")
    result = run_cli_module(
        "hpte",
        "--sales",
        folder / "sales.parquet",
        "--assignment",
        folder / "assignment.parquet",
        "--features",
        folder / "products.csv",
        "--bootstrap",
        "100",
        "--seed",
        "0",
        "-o",
        folder / "effects.csv",
        "--cate-out",
        folder / "cate.parquet",
        "--placebo-out",
        folder / "placebo.csv",
    )
    assert result.code == 0, result.stderr
    result = run_cli_module(
        "report",
        "--design",
        folder / "design.json",
        "--assignment",
        folder / "assignment.parquet",
        "--sales",
        folder / "sales.parquet",
        "--effects",
        folder / "effects.csv",
        "--cate",
        folder / "cate.parquet",
        "--products",
        folder / "products.csv",
        "--placebo",
        folder / "placebo.csv",
        "-o",
        folder / "report.html",
        "--markdown",
    )
    assert result.code == 0, result.stderr
    return folder


def test_report_is_one_page_with_every_section_and_markdown_beside_it(chain):
    html = (chain / "report.html").read_text()
    for section in (
        "Headline",
        "What was tested",
        "Effect over time",
        "Which products responded",
        "Checks",
        "Balance between the arms",
        "Provenance",
    ):
        assert f">{section}<" in html, section
    # Pictures are inside the page; the Markdown links PNG files written beside it.
    assert html.count('src="data:image/png;base64,') >= 4
    markdown = (chain / "report.md").read_text()
    for name in re.findall(r"\]\((report_files/[^)]+)\)", markdown):
        assert (chain / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pre-trend (placebo), units" in markdown and "Carryover, units" in markdown
    # Effect by feature follows the forest's own splits, read from the CATE file.
    assert "The forest split most often on:" in html and "features the forest split on most" in html
    # Provenance: the inputs' hashes and the commands that made them.
    assert "pricelab hpte --sales" in html and re.search(r"<code>[0-9a-f]{64}</code>", html)


def test_report_html_fetches_nothing_when_opened(chain):
    """No external URL anywhere: no http(s) or protocol-relative link, every src and href
    inside the page (data: or #anchor), no CSS import or url() outside data:."""
    html = (chain / "report.html").read_text()
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", html)
    assert not re.search(r"""url\(\s*["']?(?!data:)""", html)
    assert "@import" not in html and "<link" not in html and "<script" not in html


def test_report_refuses_an_effects_file_without_the_contract_columns(run_cli, chain, tmp_path):
    pl.read_csv(chain / "effects.csv").drop("lift").write_csv(tmp_path / "effects.csv")
    out = tmp_path / "report.html"
    result = run_cli(
        "report",
        "--design",
        chain / "design.json",
        "--assignment",
        chain / "assignment.parquet",
        "--sales",
        chain / "sales.parquet",
        "--effects",
        tmp_path / "effects.csv",
        "-o",
        out,
    )
    assert result.code == 65 and "lift" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# Headless Chromium now and then never exits: seen in CI after a full suite (killed at 120 s),
# and reported upstream both as a virtual-time budget that never expires and as a hang at
# shutdown after the screenshot is written. So the browser's exit does not decide: its
# output does. A complete output (a PNG up to its IEND chunk, a DOM up to ``</html>``) ends
# the wait and the browser's process group is killed; no output within ATTEMPT_SECONDS
# and the browser is killed and started once more with a fresh profile.
ATTEMPT_SECONDS = 60
ATTEMPTS = 2


@dataclasses.dataclass
class Browsed:
    stdout: str
    stderr: str


def _complete(args, stdout_path) -> bool:
    shot = next((a.split("=", 1)[1] for a in args if a.startswith("--screenshot=")), None)
    if shot is not None:
        path = Path(shot)
        return path.exists() and path.read_bytes()[-12:-4] == b"\x00\x00\x00\x00IEND"
    return b"</html>" in stdout_path.read_bytes()


def _browser(*args, profile) -> Browsed:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Wait for the page to be complete (images decoded, layout settled) before the
        # screenshot or the DOM is taken, however slow a busy machine makes that.
        "--virtual-time-budget=30000",
        "--run-all-compositor-stages-before-draw",
    ]
    failures = []
    for attempt in range(ATTEMPTS):
        folder = Path(f"{profile}-{attempt}")
        folder.mkdir(parents=True)
        out, err = folder / "stdout", folder / "stderr"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            browser = subprocess.Popen(
                [_chromium(), *flags, f"--user-data-dir={folder / 'profile'}", *args],
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
            deadline = time.monotonic() + ATTEMPT_SECONDS
            while browser.poll() is None and not _complete(args, out) and time.monotonic() < deadline:
                time.sleep(0.2)
            if browser.poll() is None:
                # Its own session: the wrapper script, the browser and its helpers.
                os.killpg(browser.pid, signal.SIGKILL)
                browser.wait()
        if _complete(args, out):
            if failures:
                warnings.warn("headless Chromium was restarted:\n" + "\n".join(failures), stacklevel=2)
            return Browsed(out.read_text(), err.read_text())
        failures.append(
            f"attempt {attempt + 1}: exit {browser.returncode}, no complete output; stderr ends:\n"
            + err.read_text()[-1500:]
        )
    raise AssertionError("headless Chromium gave no complete output:\n" + "\n".join(failures))


# Appended to a copy of the page by the browser test only (the report itself has no script):
# the page laid out at a given width (headless Chromium lays pages out no narrower than 500
# px, so the width is set on the root element), and the width its content takes: the main
# column's right edge, or more when something inside it overflows.
MEASURE = (
    "<style>html {{ width: {width}px; }}</style><script>var m = document.querySelector('main'); "
    "document.body.setAttribute('data-scroll-width', String(Math.ceil(Math.max("
    "m.getBoundingClientRect().right, m.getBoundingClientRect().left + m.scrollWidth))));</script>"
)


@pytest.mark.parametrize("width", [1280, 420])
def test_report_in_headless_chromium_shows_the_effects_files_numbers(chain, tmp_path, width):
    """At a desktop width and at a phone's 420 px: the page renders, nothing is wider than
    the window, and the headline shows the effects file's numbers (lift first)."""
    if _chromium() is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package as root)")
    page = (chain / "report.html").resolve().as_uri()
    shot = tmp_path / "report.png"
    done = _browser(
        f"--screenshot={shot}", f"--window-size={width},2600", "--hide-scrollbars", page, profile=tmp_path / "p1"
    )
    assert shot.exists(), done.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] == 2600 and pixels.shape[1] == width
    # A rendered page, not a blank one: many distinct shades (text, charts, table rules).
    assert len(np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
    measured = tmp_path / "measured.html"
    measured.write_text((chain / "report.html").read_text().replace("</body>", MEASURE.format(width=width) + "</body>"))
    dom = _browser(
        f"--window-size={width},2600", "--dump-dom", measured.resolve().as_uri(), profile=tmp_path / "p2"
    ).stdout
    scroll_width = int(re.search(r'data-scroll-width="(\d+)"', dom).group(1))
    assert scroll_width <= width, f"the page is {scroll_width} px wide in a {width} px window"
    effects = pl.read_csv(chain / "effects.csv").row(0, named=True)
    card = dom[dom.index('data-outcome="units"') :]
    # The lift comes first in the card, before the effect per product-day.
    assert card.index('class="lift"') < card.index('class="estimate"')
    floor = 1 / (100 + 1)  # the chain's hpte ran 100 draws
    keys = (
        ("estimate", fmt),
        ("ci_low", fmt),
        ("ci_high", fmt),
        ("p_value", lambda p: p_text(p, 100)),
        ("lift", pct),
        ("lift_low", pct),
        ("lift_high", pct),
    )
    for key, shown in keys:
        found = re.search(rf'class="{key}" data-value="([^"]+)">([^<]+)<', card)
        assert found, key
        assert math.isclose(float(found.group(1)), effects[key], rel_tol=0, abs_tol=0), key
        assert html.unescape(found.group(2)) == shown(effects[key]), key
    if effects["p_value"] <= floor * (1 + 1e-9):
        assert re.search(r'class="p_value" data-value="[^"]+">&lt; 0.0099<', card)
    treated_days = pl.read_parquet(chain / "assignment.parquet").filter(pl.col("treated") == 1).height
    impact = float(re.search(r'class="impact" data-value="([^"]+)"', card).group(1))
    assert math.isclose(impact, effects["estimate"] * treated_days, rel_tol=1e-12)
    os.makedirs("bench_out", exist_ok=True)
    # Kept for a person to look at (bench_out/ is not in git).
    shutil.copy(shot, os.path.join("bench_out", f"report_screenshot_{width}.png"))


def test_p_at_the_bootstrap_floor_is_shown_as_below_it():
    assert p_text(1 / 501, 500) == "< 0.002"
    assert p_text(0.0299, 500) == "0.030"
    assert p_text(1 / 501) == "0.002"


def test_spillover_that_reverses_the_direct_effect_puts_a_banner_on_top(run_cli, chain, tmp_path):
    """ipw says treating every product loses units while the direct effect is a clear gain:
    the headline shows both and a banner says the decision changes."""
    effects = pl.read_csv(chain / "effects.csv").row(0, named=True)
    pl.DataFrame(
        {
            "effect": ["direct", "spillover", "total"],
            "estimate": [effects["estimate"], -3.0, -1.5],
            "se": [0.5, 0.4, 0.3],
            "ci_low": [effects["estimate"] - 1, -3.8, -2.1],
            "ci_high": [effects["estimate"] + 1, -2.2, -0.9],
            "p_value": [0.001, 0.001, 0.001],
            "n": [100, 100, 100],
        }
    ).write_csv(tmp_path / "spillover.csv")
    out = tmp_path / "report.html"
    result = run_cli(
        "report",
        "--design",
        chain / "design.json",
        "--assignment",
        chain / "assignment.parquet",
        "--sales",
        chain / "sales.parquet",
        "--effects",
        chain / "effects.csv",
        "--spillover",
        tmp_path / "spillover.csv",
        "--description",
        "10% price cut",
        "-o",
        out,
    )
    assert result.code == 0, result.stderr
    page = out.read_text()
    banner = page.index('class="banner danger"')
    assert banner < page.index('id="headline"')
    assert "has the opposite sign (-1.5 units per product per day)" in page
    assert 'class="total" data-value="-1.5"' in page
    assert "10% price cut" in page[: page.index('id="headline"')]


def test_id_like_columns_are_not_features():
    from pricelab_cli.report import _id_like

    products = pl.DataFrame(
        {
            "product_id": [1, 2, 3],
            "community": [0, 0, 1],
            "store_code": [5, 6, 5],
            "sku_rank": [1, 2, 3],
            "price": [1.0, 2.0, 3.0],
            "size": [1, 1, 2],
        }
    )
    assert [c for c in products.columns if _id_like(products, c)] == [
        "product_id",
        "community",
        "store_code",
        "sku_rank",
    ]
