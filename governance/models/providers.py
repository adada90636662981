from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from governance import outbound
from governance.models.base import TimestampedModel


class Provider(TimestampedModel):
    """An upstream the gateway forwards to. Credentials are Fernet-encrypted at rest."""

    class Kind(models.TextChoices):
        ANTHROPIC = "anthropic"
        BEDROCK = "bedrock"
        VERTEX = "vertex"
        AZURE = "azure"
        OPENAI = "openai"
        OPENAI_COMPATIBLE = "openai-compatible"
        MOCK = "mock", "mock (built in)"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    base_url = models.URLField(max_length=500, blank=True)
    region = models.CharField(max_length=50, blank=True)
    credentials_encrypted = models.TextField(blank=True, editable=False)
    settings = models.JSONField(default=dict, blank=True, help_text="Kind-specific, non-secret.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)

    def clean(self) -> None:
        # Admin, apply_config and the services all validate through here (full_clean).
        if self.base_url:
            outbound.check_field(self.base_url, "base_url")
        self._check_kind_fields()

    def _check_kind_fields(self) -> None:
        """What each kind's adapter cannot do without: refused here, never at request time."""
        if self.kind == self.Kind.OPENAI_COMPATIBLE and not self.base_url:
            raise ValidationError(
                {
                    "base_url": "an OpenAI-compatible server needs its base URL, e.g. "
                    "http://localhost:11434/v1"
                }
            )
        if self.kind == self.Kind.BEDROCK and not (self.region or self.base_url):
            raise ValidationError({"region": "Bedrock needs a region, e.g. us-east-1"})
        if not isinstance(self.settings, dict):
            raise ValidationError({"settings": "settings must be a mapping"})


class ModelRoute(TimestampedModel):
    """A public model name and the deployments that serve it, tried in order."""

    public_name = models.CharField(max_length=200, unique=True)
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["public_name"]

    def __str__(self) -> str:
        return self.public_name


class Deployment(TimestampedModel):
    route = models.ForeignKey(ModelRoute, on_delete=models.CASCADE, related_name="deployments")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="deployments")
    upstream_model = models.CharField(
        max_length=300, blank=True, help_text="Empty or * serves the requested model name."
    )
    position = models.PositiveIntegerField(default=0, help_text="Lower is tried first.")
    weight = models.PositiveIntegerField(
        default=1, help_text="Share of traffic among deployments at the same position."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["route", "position", "id"]

    def __str__(self) -> str:
        return f"{self.route.public_name} -> {self.provider.name}:{self.upstream_model}"
