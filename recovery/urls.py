"""The recovery app's API routes, room by room. The intake's first: agents' calls are most of the traffic,
and the resolver tries patterns in order."""

from django.urls import URLPattern, URLResolver

from recovery.breakers import urls as breaker_urls
from recovery.checkpoints import urls as checkpoint_urls
from recovery.decisions import urls as decision_urls
from recovery.degradation import urls as degradation_urls
from recovery.errors import urls as error_urls
from recovery.learning import urls as learning_urls
from recovery.retries import urls as retry_urls
from recovery.sagas import urls as saga_urls
from recovery.status import urls as status_urls

urlpatterns: list[URLPattern | URLResolver] = [
    *error_urls.urlpatterns,
    *breaker_urls.urlpatterns,
    *status_urls.urlpatterns,
    *decision_urls.urlpatterns,
    *degradation_urls.urlpatterns,
    *checkpoint_urls.urlpatterns,
    *retry_urls.urlpatterns,
    *saga_urls.urlpatterns,
    *learning_urls.urlpatterns,
]
