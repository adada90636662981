"""Server-rendered dashboards for users with a role: the request log (/logs) and spend
(/dashboards/spend), each user reading their organizations' or teams' requests (scope.py).

Pages read the ledger only through indexed, bounded queries (keyset pages, id ranges) and spend
only from rollups plus the rows not rolled up yet; names are resolved once per page. Charts are
inline SVG drawn on the server, so there is no JavaScript chart library and no CDN; the one
script (static/telemetry/logs.js) polls for new request-log rows.
"""
