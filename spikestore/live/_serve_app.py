"""The web application of ``spikestore serve``: one page, its static files and one JSON view.

``GET /``
    The page (``static/page.html``): plain HTML, its script and uPlot, the
    charting library, vendored under ``static/`` (no network, no CDN).
``GET /view``
    What the page draws (:func:`~spikestore.live._serve_view.page_view`) for
    the choices in the query; with ``since=<version>`` and nothing newer
    published, only ``{"version": ...}``, so a tab that polls an idle run
    costs a few bytes.
``GET /static/...``
    The page's files, cached by the browser (their URLs carry a content hash).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.web import Application, RequestHandler

from spikestore.errors import InvalidArgumentError
from spikestore.live._serve_data import PageData
from spikestore.live._serve_view import Choice, page_view

__all__ = ["STATIC", "PageOptions", "make_app"]

#: The page's HTML, script, style and the vendored uPlot.
STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class PageOptions:
    """What the command line sets for every page: the refresh interval (s) and the firing threshold."""

    interval: float
    threshold: float


class _Page(RequestHandler):
    def initialize(self, options: PageOptions) -> None:
        self.page_options = options

    def get(self) -> None:
        # the page polls every half interval: a flush shows within about 1.5 intervals
        config = {"poll_ms": max(100, int(self.page_options.interval * 500)), "threshold": self.page_options.threshold}
        self.set_header("Cache-Control", "no-store")
        self.render("page.html", config=json.dumps(config).replace("<", "\\u003c"))


class _View(RequestHandler):
    def initialize(self, get_data: Callable[[], PageData | None], options: PageOptions) -> None:
        self.get_data, self.page_options = get_data, options

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        data = self.get_data()
        if data is None:  # the first refresh has not finished
            self.write('{"version": 0}')
            return
        query = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        if query.get("since") == str(data.version):
            self.write(json.dumps({"version": data.version}))
            return
        try:
            choice = Choice.from_query(query)
        except InvalidArgumentError as exc:
            self.set_status(400)
            self.write(json.dumps({"error": str(exc)}))
            return
        view: dict[str, Any] = page_view(data, choice, self.page_options.threshold)
        self.write(json.dumps(view, allow_nan=False, separators=(",", ":")))


def make_app(get_data: Callable[[], PageData | None], options: PageOptions) -> Application:
    """The Tornado application: the page, its JSON view of ``get_data()``, and the static files."""
    return Application([(r"/", _Page, {"options": options}),
                        (r"/view", _View, {"get_data": get_data, "options": options})],
                       template_path=str(STATIC), static_path=str(STATIC), compress_response=True)
