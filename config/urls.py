from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import views
from healing import views as healing_views
from recovery import breaker_views, checkpoint_views, degradation_views, retry_views, saga_views
from recovery import recovery_views as plan_views
from recovery import views as recovery_views

api_v1 = [
    path("errors", recovery_views.ErrorsView.as_view(), name="errors"),
    path("errors/classify", recovery_views.ClassifyView.as_view(), name="errors-classify"),
    path("patterns", recovery_views.PatternListView.as_view(), name="patterns"),
    path("patterns/<int:pk>", recovery_views.PatternDetailView.as_view(), name="pattern-detail"),
    path("rules", recovery_views.RuleListView.as_view(), name="rules"),
    path("rules/<int:pk>", recovery_views.RuleDetailView.as_view(), name="rule-detail"),
    path("services", breaker_views.ServiceListView.as_view(), name="services"),
    path("services/<str:service>", breaker_views.ServiceDetailView.as_view(), name="service-detail"),
    path("outcomes", breaker_views.OutcomesView.as_view(), name="outcomes"),
    path("breakers", breaker_views.BreakerListView.as_view(), name="breakers"),
    path("breakers/events", breaker_views.BreakerEventsView.as_view(), name="breaker-events"),
    path("breakers/stream", breaker_views.BreakerStreamView.as_view(), name="breaker-stream"),
    path("breakers/snapshot", breaker_views.BreakerSnapshotView.as_view(), name="breaker-snapshot"),
    path("breakers/<str:service>", breaker_views.BreakerDetailView.as_view(), name="breaker-detail"),
    path("breakers/<str:service>/permit", breaker_views.PermitView.as_view(), name="breaker-permit"),
    path("breakers/<str:service>/override", breaker_views.OverrideView.as_view(), name="breaker-override"),
    path("status", breaker_views.StatusView.as_view(), name="status"),
    path("recovery/plan", plan_views.PlanView.as_view(), name="recovery-plan"),
    path("recovery/options", plan_views.OptionsView.as_view(), name="recovery-options"),
    path("fallbacks/<str:service>", plan_views.FallbackChainView.as_view(), name="fallback-chain"),
    path("retry-policies", plan_views.RetryPolicyListView.as_view(), name="retry-policies"),
    path("retry-policies/resolve", plan_views.RetryPolicyResolveView.as_view(), name="retry-policy-resolve"),
    path("degradation", degradation_views.DegradationView.as_view(), name="degradation"),
    path("degradation/clear", degradation_views.ClearView.as_view(), name="degradation-clear"),
    path("degradation/events", degradation_views.EventListView.as_view(), name="degradation-events"),
    path("tasks", checkpoint_views.TaskListView.as_view(), name="tasks"),
    path("tasks/<str:task_id>", checkpoint_views.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<str:task_id>/heartbeat", checkpoint_views.HeartbeatView.as_view(), name="task-heartbeat"),
    path("tasks/<str:task_id>/complete", checkpoint_views.CompleteView.as_view(), name="task-complete"),
    path(
        "tasks/<str:task_id>/checkpoints", checkpoint_views.CheckpointListView.as_view(), name="checkpoints"
    ),
    path(
        "tasks/<str:task_id>/checkpoints/latest",
        checkpoint_views.LatestCheckpointView.as_view(),
        name="checkpoint-latest",
    ),
    path(
        "tasks/<str:task_id>/checkpoints/<int:seq>",
        checkpoint_views.CheckpointDetailView.as_view(),
        name="checkpoint-detail",
    ),
    path(
        "tasks/<str:task_id>/checkpoints/<int:seq>/fork",
        checkpoint_views.ForkView.as_view(),
        name="checkpoint-fork",
    ),
    path("retries", retry_views.RetryListView.as_view(), name="retries"),
    path("retries/<str:job_id>", retry_views.RetryDetailView.as_view(), name="retry-detail"),
    path("retries/<str:job_id>/cancel", retry_views.RetryCancelView.as_view(), name="retry-cancel"),
    path("retries/<str:job_id>/rerun", retry_views.RetryRerunView.as_view(), name="retry-rerun"),
    path("transactions", saga_views.TransactionListView.as_view(), name="transactions"),
    path("transactions/<uuid:pk>", saga_views.TransactionDetailView.as_view(), name="transaction-detail"),
    path("transactions/<uuid:pk>/steps", saga_views.StepsView.as_view(), name="transaction-steps"),
    path("transactions/<uuid:pk>/commit", saga_views.CommitView.as_view(), name="transaction-commit"),
    path("transactions/<uuid:pk>/rollback", saga_views.RollbackView.as_view(), name="transaction-rollback"),
    path("audit-events", healing_views.AuditEventListView.as_view(), name="audit-events"),
    path("me", healing_views.MeView.as_view(), name="me"),
]

urlpatterns = [
    # The API first: agents' calls are most of the traffic, and the resolver tries patterns in order.
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("healthz", views.live, name="healthz"),
    path("readyz", views.ready, name="readyz"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("django_prometheus.urls")),
]
