from django.urls import path

from . import handoff_views

urlpatterns = [
    path("handoffs/", handoff_views.handoff_list_page, name="staff-handoffs"),
    path("handoffs/<int:pk>/", handoff_views.staff_call_page, name="staff-call"),
]
