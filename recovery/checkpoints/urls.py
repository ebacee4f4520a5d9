"""Tasks and their checkpoints."""

from django.urls import path

from recovery.checkpoints import api

urlpatterns = [
    path("tasks", api.TaskListView.as_view(), name="tasks"),
    path("tasks/<str:task_id>", api.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<str:task_id>/heartbeat", api.HeartbeatView.as_view(), name="task-heartbeat"),
    path("tasks/<str:task_id>/complete", api.CompleteView.as_view(), name="task-complete"),
    path("tasks/<str:task_id>/checkpoints", api.CheckpointListView.as_view(), name="checkpoints"),
    path(
        "tasks/<str:task_id>/checkpoints/latest",
        api.LatestCheckpointView.as_view(),
        name="checkpoint-latest",
    ),
    path(
        "tasks/<str:task_id>/checkpoints/<int:seq>",
        api.CheckpointDetailView.as_view(),
        name="checkpoint-detail",
    ),
    path(
        "tasks/<str:task_id>/checkpoints/<int:seq>/fork",
        api.ForkView.as_view(),
        name="checkpoint-fork",
    ),
]
