"""WhiteNoise, scanned once per run instead of once per test client.

Every new Django test client builds its own middleware chain, and WhiteNoise (which serves the static files
through Django's finders in the embedded mode) lists and stats every static file each time: about 60 ms per
client, a fifth of the whole fast suite. The static files do not change during a run, so the first scan is
kept and handed to every later WhiteNoise built with the same settings; what it serves is the same.
"""

from __future__ import annotations

from typing import Any

from whitenoise.middleware import WhiteNoiseMiddleware

_scan = WhiteNoiseMiddleware.add_files_from_finders
_scanned: dict[tuple[Any, ...], dict[str, Any]] = {}


def _key(middleware: WhiteNoiseMiddleware) -> tuple[Any, ...]:
    # Everything a StaticFile's headers depend on, so that a test overriding these settings gets its own scan.
    return (
        middleware.static_prefix,
        middleware.max_age,
        middleware.allow_all_origins,
        middleware.charset,
        middleware.add_headers_function,
        middleware.index_file,
        tuple(sorted(middleware.media_types.types_map.items())),
        getattr(middleware.immutable_file_test, "__func__", middleware.immutable_file_test),
    )


def _add_files_from_finders_once(self: WhiteNoiseMiddleware) -> None:
    key = _key(self)
    if key not in _scanned:
        before = set(self.files)
        _scan(self)
        _scanned[key] = {url: self.files[url] for url in self.files if url not in before}
    self.files.update(_scanned[key])


def install() -> None:
    WhiteNoiseMiddleware.add_files_from_finders = _add_files_from_finders_once  # type: ignore[method-assign]
