"""Error learning: the figures, and forgetting them."""

from django.urls import path

from recovery.learning import api

urlpatterns = [
    path("learning", api.LearningView.as_view(), name="learning"),
    path("learning/reset", api.ResetView.as_view(), name="learning-reset"),
]
