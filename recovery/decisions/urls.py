"""Recovery decisions: plans, options, fallback chains, retry policies."""

from django.urls import path

from recovery.decisions import api

urlpatterns = [
    path("recovery/plan", api.PlanView.as_view(), name="recovery-plan"),
    path("recovery/options", api.OptionsView.as_view(), name="recovery-options"),
    path("fallbacks/<str:service>", api.FallbackChainView.as_view(), name="fallback-chain"),
    path("retry-policies", api.RetryPolicyListView.as_view(), name="retry-policies"),
    path("retry-policies/resolve", api.RetryPolicyResolveView.as_view(), name="retry-policy-resolve"),
]
