"""Anthropic's Admin API shapes under /v1/organizations/: spend limits over the gateway's
budgets, and the messages usage and cost reports over its rollups. A client written against
Anthropic's API works with the gateway's URL and an API token as its admin key."""
