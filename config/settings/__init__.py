"""Settings: `base` for every process (DJANGO_SETTINGS_MODULE=config.settings, as before), `test` for the suite."""

from config.settings.base import *  # noqa: F403
