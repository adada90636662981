"""The MCP gateway: `/mcp` (Streamable HTTP) serving the registered MCP servers behind one URL,
with each key's tool grants, rate limits, budgets and per-call metering applied.

Downstream (the client side) and upstream (the registered servers) both speak through the
official `mcp` SDK: `server.py` builds the SDK's low-level server whose handlers apply the
governance, `upstream.py` keeps one SDK client session per registered server, `catalog.py`
aggregates and namespaces their tools, `calls.py` governs and meters every tool call, and
`gateway.py` owns it all for the runtime.
"""
