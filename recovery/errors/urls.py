"""Errors: intake, the classification dry run, patterns and rules."""

from django.urls import path

from recovery.errors import api

urlpatterns = [
    path("errors", api.ErrorsView.as_view(), name="errors"),
    path("errors/classify", api.ClassifyView.as_view(), name="errors-classify"),
    path("patterns", api.PatternListView.as_view(), name="patterns"),
    path("patterns/<int:pk>", api.PatternDetailView.as_view(), name="pattern-detail"),
    path("rules", api.RuleListView.as_view(), name="rules"),
    path("rules/<int:pk>", api.RuleDetailView.as_view(), name="rule-detail"),
]
