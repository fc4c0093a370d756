from django.contrib import admin
from django.urls import path

from . import views

app_name = "console"

urlpatterns = [
    path("dashboard/", admin.site.admin_view(views.dashboard), name="dashboard"),
    path("live/", admin.site.admin_view(views.live), name="live"),
    path("live.json", admin.site.admin_view(views.live_json), name="live-json"),
    path("live/<int:pk>/stop", admin.site.admin_view(views.live_stop), name="live-stop"),
    path("live/<int:pk>/redispatch", admin.site.admin_view(views.live_redispatch), name="live-redispatch"),
    path("export", admin.site.admin_view(views.export), name="export"),
]
