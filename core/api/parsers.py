"""The API's one JSON parser (settings.REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from __future__ import annotations

from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    pass
