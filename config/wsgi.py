import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# "Accepted" must mean kept: say at start-up, not at the first report, when the intake's Redis does not persist
# writes and reports will be written in the request instead (docs/intake.md).
from recovery.errors import intake  # noqa: E402 (needs the apps loaded above)

intake.check_at_startup()
