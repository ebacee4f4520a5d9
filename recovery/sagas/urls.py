"""Transactions with compensations (sagas)."""

from django.urls import path

from recovery.sagas import api

urlpatterns = [
    path("transactions", api.TransactionListView.as_view(), name="transactions"),
    path("transactions/<uuid:pk>", api.TransactionDetailView.as_view(), name="transaction-detail"),
    path("transactions/<uuid:pk>/steps", api.StepsView.as_view(), name="transaction-steps"),
    path("transactions/<uuid:pk>/commit", api.CommitView.as_view(), name="transaction-commit"),
    path("transactions/<uuid:pk>/rollback", api.RollbackView.as_view(), name="transaction-rollback"),
]
