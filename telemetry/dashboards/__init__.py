"""Server-rendered dashboards for staff: the request log (/logs) and spend (/dashboards/spend).

Pages read the ledger only through indexed, bounded queries (keyset pages, id ranges) and spend
only from rollups plus the rows not rolled up yet; names are resolved once per page. Charts are
inline SVG drawn on the server, so there is no JavaScript chart library and no CDN; the one
script (static/telemetry/logs.js) polls for new request-log rows.
"""
