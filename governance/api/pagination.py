"""Cursor pagination: stable pages while rows are added, and no counts to compute."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class GatewayCursorPagination(CursorPagination):
    """`?cursor=` from the previous page's `next`; `?page_size=` up to 500. The order is
    the view's `?ordering=` (one of its ordering fields, `-` for descending), by id otherwise."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "id"
