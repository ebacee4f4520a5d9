"""One page of a list: `?page=` (from 1) and `?page_size=` (50 unless said, at most 500).

Both are read strictly: a value that is not a whole number in range (`1e400`, `NaN`, `-1`, 5,000 digits) is a
400 naming the parameter, not a silently ignored size or a 404 that hides the caller's mistake. A page past the
last one is still a 404 (there is no such page), and a size above 500 is served as 500, as documented.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from core.api.errors import InvalidInput

# Up to 18 digits: any page number or size fits a 64-bit integer, and no lookup converts 5,000 digits.
_WHOLE = re.compile(r"[0-9]{1,18}")


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        given = request.query_params.get(self.page_size_query_param)
        if given is None or given == "":
            return int(self.page_size or 50)
        size = _whole(given)
        if size is None or size < 1:
            raise InvalidInput(
                f"page_size must be a whole number from 1 to {self.max_page_size}.",
                field=self.page_size_query_param,
            )
        return min(size, self.max_page_size)

    def get_page_number(self, request: Request, paginator: Any) -> Any:
        given = request.query_params.get(self.page_query_param)
        if given is None or given == "":
            return 1
        if given in self.last_page_strings:
            return paginator.num_pages
        number = _whole(given)
        if number is None or number < 1:
            raise InvalidInput("page must be a whole number from 1 (or `last`).", field=self.page_query_param)
        return number


def _whole(text: str) -> int | None:
    return int(text) if _WHOLE.fullmatch(text.strip()) else None
