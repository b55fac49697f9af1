"""`factory report OUT`: the plots are drawn (checked in a headless
Chromium's screenshot, not only as files), on a finished run and on one in
progress; the card carries the main plots."""

import shutil
import subprocess

import pytest
from PIL import Image

from conftest import SAMPLE_PROBLEMS, run_factory, run_in_background
from factory.report import CARD_PLOTS, COLORS
from test_run_fake import fake_job

PLOTS = {"throughput", "lengths", "pass_rate_by_source", "pass_rate_by_problem_type", "finish_reasons", "verification",
         "samples_per_problem", "cost"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def colours(path, box=None) -> set:
    img = Image.open(path).convert("RGB")
    if box:
        img = img.crop(box)
    return {c for _, c in img.getcolors(maxcolors=1 << 20)}


def rgb(hex_colour: str) -> tuple:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


@pytest.fixture
def finished(tmp_path, fake_server):
    out = tmp_path / "out"
    run_factory("run", fake_job(tmp_path, fake_server(), out, output={"shard_rows": 5}), check=True)
    return out


def test_report_of_a_finished_run_draws_every_plot(finished):
    proc = run_factory("report", finished, "--price-per-gpu-hour", "2.5", check=True)
    index = finished / "report" / "index.html"
    assert f"report: {index}" in proc.stdout
    pngs = {p.stem: p for p in (finished / "report").glob("*.png")}
    assert set(pngs) == PLOTS
    for name, png in pngs.items():
        assert len(colours(png)) > 20, f"{name} looks blank"  # axes, text, bars or lines: not a flat image
    page = index.read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOTS)  # self-contained
    assert f"<th>problems stored</th><td>{SAMPLE_PROBLEMS}</td>" in page and "at 2.5 per GPU-hour" in page
    # the correct traces' histogram is there (drawn at alpha 0.6 over white)
    teal = tuple(round(0.6 * c + 0.4 * 255) for c in rgb(COLORS["correct"]))
    assert any(max(abs(a - b) for a, b in zip(px, teal)) <= 3 for px in colours(pngs["lengths"]))


def test_card_shows_the_main_plots(finished):
    card = (finished / "README.md").read_text()
    for name in CARD_PLOTS:
        assert f"](plots/{name}.png)" in card and (finished / "plots" / f"{name}.png").is_file()
    from factory.hub import files_to_push

    pushed = [p.relative_to(finished).as_posix() for p in files_to_push(finished)]
    assert {f"plots/{n}.png" for n in CARD_PLOTS} <= set(pushed) and pushed[-1] == "README.md"


def test_report_of_a_run_in_progress(tmp_path, fake_server):
    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(latency=0.3), out, engine={"max_concurrency": 1},
                   output={"shard_rows": 2, "flush_interval_s": 0.2})
    with run_in_background(job, out, finish=False) as run:
        run_factory("report", out, check=True)
        assert run.poll() is None, "the run should still be going"
        page = (out / "report" / "index.html").read_text()
        stored = int(page.split("<th>problems stored</th><td>")[1].split("<")[0])
        assert 3 <= stored < SAMPLE_PROBLEMS  # what was committed, not the whole set


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (the Makefile's test setup installs it)")
def test_report_renders_in_a_headless_browser(finished, tmp_path):
    """Open the page in Chromium and look at the screenshot: the plots' own
    colours are on screen, so the images decoded and were drawn."""
    run_factory("report", finished, check=True)
    shot = tmp_path / "shot.png"
    index = finished / "report" / "index.html"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1500,2600", index.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    seen = colours(shot)
    assert len(seen) > 100  # a page of plots, not a blank or an error page
    for colour in ("#264653", "#2a9d8f"):  # bars and lines of the plots
        assert rgb(colour) in seen, colour
    counts = {c: n for n, c in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)}
    assert counts[rgb("#2a9d8f")] > 500  # whole bars, not a stray pixel
