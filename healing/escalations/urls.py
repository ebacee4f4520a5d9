"""The escalation review queue (under /api/v1/): the queue, one escalation, and the humans' acts on it."""

from django.urls import path

from healing.escalations import api

urlpatterns = [
    path("escalations", api.EscalationListView.as_view(), name="escalations"),
    path("escalations/<str:escalation_id>", api.EscalationDetailView.as_view(), name="escalation"),
    path("escalations/<str:escalation_id>/ack", api.EscalationAckView.as_view(), name="escalation-ack"),
    path(
        "escalations/<str:escalation_id>/assign", api.EscalationAssignView.as_view(), name="escalation-assign"
    ),
    path(
        "escalations/<str:escalation_id>/comment",
        api.EscalationCommentView.as_view(),
        name="escalation-comment",
    ),
    path(
        "escalations/<str:escalation_id>/snooze", api.EscalationSnoozeView.as_view(), name="escalation-snooze"
    ),
    path(
        "escalations/<str:escalation_id>/resolve",
        api.EscalationResolveView.as_view(),
        name="escalation-resolve",
    ),
    path(
        "escalations/<str:escalation_id>/reopen", api.EscalationReopenView.as_view(), name="escalation-reopen"
    ),
]
