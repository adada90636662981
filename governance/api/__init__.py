"""The REST API under /api/v1/ (Django REST Framework): governance objects for automation.

Every write goes through governance.services (audited), every read through
governance.access.Access (what the caller's roles let them see). Conventions shared by all
resources live beside this module: authentication (API tokens, staff sessions), permissions,
cursor pagination, ETag / If-Match, Idempotency-Key, and the OpenAPI schema.
"""
