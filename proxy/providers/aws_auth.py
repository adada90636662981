"""AWS credentials and request signing for the Bedrock adapter, through botocore.

Where the credentials come from, in order: a Bedrock API key (sent as a bearer token), the
provider's static keys (with an optional session token), else botocore's own resolution: the
profile named in the provider's settings, or the default chain (environment, shared files,
SSO, container or instance role). `role_arn` in the settings assumes that role on top of any
of them. Resolving can read files and call IMDS or STS, so it runs in a worker thread, is
cached, and is redone only when botocore says the credentials are about to expire.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)
from botocore.session import Session

from governance.policy import ProviderConfig

logger = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"  # what the AWS SDKs and Anthropic's Bedrock client fall back to
SIGNING_NAME = "bedrock"  # the SigV4 service name of bedrock-runtime
# How long a failed resolution is answered from memory: without it every request would queue
# for its own attempt at IMDS or STS while they are down.
FAILURE_MEMORY_SECONDS = 5.0
# How often expiring credentials may be refreshed: botocore keeps serving the old ones when a
# refresh fails before their mandatory window, and each try costs a thread and a network call.
REFRESH_INTERVAL_SECONDS = 30.0


class CredentialsUnavailable(OSError):
    """No usable AWS credentials for a provider.

    An OSError on purpose: the forwarding code treats it like an unreachable deployment, so the
    request fails over to the next one instead of failing outright.
    """


def _text(settings: Mapping[str, object], name: str) -> str:
    value = settings.get(name)
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class AwsAccess:
    """Everything that decides how a provider authenticates; equal values share one source."""

    provider: str
    region: str
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    profile: str = ""
    role_arn: str = ""
    external_id: str = field(default="", repr=False)
    role_session_name: str = ""

    @classmethod
    def of(cls, provider: ProviderConfig) -> AwsAccess:
        credentials, settings = provider.credentials, provider.settings
        return cls(
            provider=provider.name,
            region=provider.region.strip(),
            access_key_id=credentials.get("access_key_id", "").strip(),
            secret_access_key=credentials.get("secret_access_key", "").strip(),
            session_token=credentials.get("session_token", "").strip(),
            api_key=credentials.get("api_key", "").strip(),
            profile=_text(settings, "profile"),
            role_arn=_text(settings, "role_arn"),
            external_id=_text(settings, "external_id"),
            role_session_name=_text(settings, "role_session_name"),
        )

    @property
    def needs_botocore(self) -> bool:
        """Whether resolving may touch files or the network (and so needs a thread)."""
        if self.api_key:
            return False
        return not self.access_key_id or bool(self.role_arn)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Credentials ready to use: SigV4 keys, or a Bedrock API key when `credentials` is None."""

    region: str
    credentials: ReadOnlyCredentials | None = field(repr=False)
    api_key: str = field(default="", repr=False)

    def authorize(self, *, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """`headers` plus authentication for a POST of exactly `body` to exactly `url`."""
        if self.credentials is None:
            return {**headers, "authorization": f"Bearer {self.api_key}"}
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(self.credentials, SIGNING_NAME, self.region).add_auth(request)
        return {str(name): str(value) for name, value in request.headers.items()}


def _environment_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""


class CredentialSource:
    """One provider's credentials: resolved once, refreshed before they expire.

    Belongs to one event loop (its lock does), like the adapter that holds it.
    """

    def __init__(self, access: AwsAccess) -> None:
        self._access = access
        self._lock = asyncio.Lock()
        self._botocore: Any = None  # botocore Credentials or RefreshableCredentials
        self._region = access.region
        self._resolved: Resolved | None = None
        self._next_refresh = 0.0
        self._failure: CredentialsUnavailable | None = None
        self._failed_at = 0.0
        if not access.needs_botocore:
            self._resolved = self._without_botocore()

    async def resolve(self) -> Resolved:
        resolved = self._resolved
        if resolved is not None and not self._refresh_due():
            return resolved
        async with self._lock:
            if self._resolved is None or self._refresh_due():
                self._raise_recent_failure()
                try:
                    self._resolved = await asyncio.to_thread(self._load)
                except CredentialsUnavailable as exc:
                    self._failure, self._failed_at = exc, time.monotonic()
                    raise
                self._next_refresh = time.monotonic() + REFRESH_INTERVAL_SECONDS
            return self._resolved

    def _refresh_due(self) -> bool:
        credentials = self._botocore
        return (
            isinstance(credentials, RefreshableCredentials)
            and time.monotonic() >= self._next_refresh
            and bool(credentials.refresh_needed())
        )

    def _raise_recent_failure(self) -> None:
        if self._failure is not None:
            if time.monotonic() - self._failed_at < FAILURE_MEMORY_SECONDS:
                raise self._failure
            self._failure = None

    def _without_botocore(self) -> Resolved:
        access = self._access
        region = access.region or _environment_region() or DEFAULT_REGION
        if access.api_key:
            return Resolved(region=region, credentials=None, api_key=access.api_key)
        frozen = ReadOnlyCredentials(
            access.access_key_id, access.secret_access_key, access.session_token or None, None
        )
        return Resolved(region=region, credentials=frozen)

    # --- in a worker thread -------------------------------------------------------------------

    def _load(self) -> Resolved:
        access = self._access
        try:
            if self._botocore is None:
                session = Session(profile=access.profile or None)
                region = access.region or str(session.get_config_variable("region") or "")
                self._region = region or DEFAULT_REGION
                self._botocore = self._credentials(session, self._region)
            frozen = self._botocore.get_frozen_credentials()
        except CredentialsUnavailable:
            raise
        except Exception as exc:  # botocore raises many kinds (files, STS, IMDS, SSO)
            logger.warning(
                "AWS credentials for provider %s could not be resolved: %s",
                access.provider,
                type(exc).__name__,
            )
            raise CredentialsUnavailable(
                f"AWS credentials for provider {access.provider} could not be resolved "
                f"({type(exc).__name__})"
            ) from exc
        return Resolved(region=self._region, credentials=frozen)

    def _credentials(self, session: Any, region: str) -> Any:
        access = self._access
        if access.access_key_id:
            base: Any = Credentials(
                access.access_key_id,
                access.secret_access_key,
                access.session_token or None,
                method="static",
            )
        else:
            base = session.get_credentials()
            if base is None:
                raise CredentialsUnavailable(
                    f"no AWS credentials found for provider {access.provider} (environment, "
                    "shared files, SSO, container or instance role)"
                )
        if not access.role_arn:
            return base
        extra_args = {"RoleSessionName": access.role_session_name or "llm-gateway"}
        if access.external_id:
            extra_args["ExternalId"] = access.external_id
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=functools.partial(session.create_client, region_name=region),
            source_credentials=base,
            role_arn=access.role_arn,
            extra_args=extra_args,
        )
        return DeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
