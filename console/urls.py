"""The console's routes, under /console/ (namespace `console`). Pages are GETs; each action is a POST of its own."""

from django.urls import path

from console.fleet import views as fleet
from console.queue import views as queue
from console.search import views as search
from console.timeline import views as timeline

app_name = "console"

urlpatterns = [
    path("", fleet.fleet, name="fleet"),
    path("fleet/rows/", fleet.fleet_rows, name="fleet-rows"),
    path("queue/", queue.queue, name="queue"),
    path("queue/rows/", queue.queue_rows, name="queue-rows"),
    path("escalations/<int:escalation_id>/<str:verb>/", queue.escalation_action, name="escalation-action"),
    path("runs/<int:run_id>/<str:verb>/", queue.run_decision, name="run-decision"),
    path("services/<str:name>/", timeline.service, name="service"),
    path("services/<str:name>/timeline/", timeline.timeline, name="timeline"),
    path("services/<str:name>/breaker/", timeline.breaker_override, name="breaker-override"),
    path("services/<str:name>/degradation/", timeline.degradation, name="degradation"),
    path("services/<str:name>/checks/<int:check_id>/run/", timeline.run_check, name="run-check"),
    path("services/<str:name>/heal/", timeline.heal, name="heal"),
    path("search/", search.search, name="search"),
]
