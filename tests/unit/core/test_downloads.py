"""The pure parts of the download machinery: which downloads are the same, which
progress reports become events, a download as the admin API shows it, and the
silent progress bar huggingface_hub feeds."""

from __future__ import annotations

import pytest

from router.core.downloads import Download, Throttle, download_key
from router.discovery.hf_progress import reporting_bar

URL = "https://hub/acme/x/resolve/main/x-Q4_K_M.gguf"


def test_one_download_per_repo_and_quant_whatever_the_case():
    assert download_key("acme/X-GGUF:q4_k_m") == download_key(" acme/x-gguf:Q4_K_M ") == ("acme/x-gguf", "Q4_K_M")
    assert download_key("acme/x") != download_key("acme/x:Q8_0")


@pytest.mark.parametrize("ref", ["", "acme", "a/b/c", "../x", "acme/x:Q4 K"])
def test_anything_but_user_repo_quant_is_refused(ref):
    with pytest.raises(ValueError):
        download_key(ref)


def test_progress_is_throttled_but_each_file_starts_and_ends_with_an_event():
    t = Throttle(every_s=0.25)
    assert t.due(URL, 0, 100, now=10.0), "the first report of a file"
    assert not t.due(URL, 10, 100, now=10.1)
    assert t.due(URL, 30, 100, now=10.3), "a quarter second later"
    assert not t.due(URL, 40, 100, now=10.4)
    assert t.due(URL + "2", 0, 50, now=10.41), "the first report of the next file"
    assert t.due(URL, 100, 100, now=10.42), "the last report of a file"
    assert not t.due(URL, 5, None, now=10.5), "no total: only the clock decides"


async def test_a_download_as_the_admin_api_shows_it():
    dl = Download(name="acme/x:Q4_K_M", key=("acme/x", "Q4_K_M"), startup_model=True)
    dl.progress = {URL: {"done": 30, "total": 100}, URL + "2": {"done": 5, "total": 10}}
    view = dl.view()
    assert view["done_bytes"] == 35 and view["total_bytes"] == 110 and view["startup_model"] is True
    dl.progress[URL + "3"] = {"done": 1, "total": None}
    assert dl.view()["total_bytes"] is None, "unknown while one file's size is unknown"


def test_the_progress_bar_reports_bytes_written_once_and_its_callback_can_stop_it():
    seen: list[tuple[str, int, int | None]] = []
    bar = reporting_bar(URL, lambda *a: seen.append(a))(total=100, initial=20, desc="x", unit="B")
    bar.update(30)
    bar.update_transfer(30)  # Xet's network bytes: not counted twice
    bar.set_transfer_postfix_str("1 MB/s")
    bar.update(-10)  # a resumed download rolled back
    bar.close()
    assert seen == [(URL, 20, 100), (URL, 50, 100), (URL, 40, 100)]

    class Stop(Exception):
        pass

    def stop(url: str, done: int, total: int | None) -> None:
        if done:
            raise Stop

    bar = reporting_bar(URL, stop)(total=10)
    with pytest.raises(Stop):
        bar.update(5)
