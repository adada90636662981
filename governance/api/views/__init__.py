"""The API's viewsets, one module per area (routers.py registers them)."""
