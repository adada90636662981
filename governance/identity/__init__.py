"""Who people are: single sign-on over OpenID Connect for the admin and the dashboards.

- `oidc`: the client settings (GATEWAY_OIDC_*) and the identity provider's discovery document.
- `backend`: the Django authentication backend (mozilla-django-oidc, code flow with PKCE).
- `views` / `urls`: /sso/start/ and /sso/callback/, and the admin login page with its SSO button.

What a sign-in writes (the user, their identity, their roles from the groups claim) is in
governance/services/identities.py.
"""
