"""Claude Code's /login through the gateway ("Cloud gateway"): the sign-in protocol, managed
settings and telemetry ingest under GATEWAY_SIGNIN_PATH (CLAUDE-GATEWAY.md; README "Claude
Code sign-in").

- `protocol`: discovery, device authorization, the token endpoint (device code and refresh
  grants, RFC 8628 errors), revocation (RFC 7009): JSON endpoints for the CLI.
- `device`: the verification page the developer's browser opens (code, identity provider
  sign-in, team choice, approve or deny).
- `idp`: the browser's authorization-code flow (PKCE S256) and the refreshes at the identity
  provider, on governance/identity/'s OpenID Connect client.
- `managed`: GET …/managed/settings; `ingest`: POST …/v1/{metrics,logs,traces}.
- `bearer`: the access token a signed-in Claude Code presents to those two.
- `codes`, `ratelimit`: secrets and their formats; per-address limits of the sign-in.

What the sign-in writes (sessions, developer keys, deprovisioning) is in
governance/services/signin.py. The inference routes under the same path (/v1/messages,
count_tokens, /v1/models) are the proxy's (proxy/app.py).
"""
