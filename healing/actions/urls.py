"""Healing actions, runs and holds (under /api/v1/)."""

from django.urls import path

from healing.actions import api

urlpatterns = [
    path("healing/actions", api.ActionListView.as_view(), name="healing-actions"),
    path("healing/actions/<str:name>", api.ActionDetailView.as_view(), name="healing-action"),
    path("healing/runs", api.RunListView.as_view(), name="healing-runs"),
    path("healing/runs/<str:run_id>", api.RunDetailView.as_view(), name="healing-run"),
    path("healing/runs/<str:run_id>/approve", api.RunApproveView.as_view(), name="healing-run-approve"),
    path("healing/runs/<str:run_id>/reject", api.RunRejectView.as_view(), name="healing-run-reject"),
    path("healing/runs/<str:run_id>/cancel", api.RunCancelView.as_view(), name="healing-run-cancel"),
    path("healing/holds", api.HoldListView.as_view(), name="healing-holds"),
    path("healing/holds/<str:hold_id>/clear", api.HoldClearView.as_view(), name="healing-hold-clear"),
]
