"""A download's progress, byte by byte, from huggingface_hub's own hook.

`hf_hub_download(tqdm_class=...)` builds a progress bar per file and feeds it
the bytes as they are written; the bar here draws nothing and hands them to
a callback instead, which runs in the downloading thread. What the callback
raises stops the download and propagates unchanged: that is how a download
is cancelled (a partial file stays in the cache; a later download resumes it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# (url of the file, bytes done, bytes in all or None)
ProgressCallback = Callable[[str, int, int | None], None]


def reporting_bar(url: str, report: ProgressCallback) -> type:
    """A silent tqdm class that reports the bytes of the file at `url`.

    `update_transfer` makes huggingface_hub treat it as one aggregated bar, so
    an Xet download (which reports network and disk bytes apart) counts once.
    """
    from tqdm import tqdm

    class _Bar(tqdm):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            initial = kwargs.get("initial")
            self._done = initial if isinstance(initial, int) else 0
            report(url, self._done, self.total)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            report(url, self._done, self.total)
            return None

        def update_transfer(self, n: float | None = 1) -> None:
            pass  # network bytes: counted by update() once on disk

        def set_transfer_postfix_str(self, *args: object, **kwargs: object) -> None:
            pass

    return _Bar


def fetch_file(repo_id: str, filename: str, revision: str, cache_dir: Path, endpoint: str,
               token: str | bool | None, progress_cb: ProgressCallback | None = None) -> str:
    """`hf_hub_download` of one file; its bytes go to `progress_cb` when one is given."""
    from huggingface_hub import hf_hub_download, hf_hub_url

    bar = None
    if progress_cb is not None:
        bar = reporting_bar(hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint), progress_cb)
    return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                           token=token, tqdm_class=bar)
