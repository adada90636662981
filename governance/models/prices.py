from __future__ import annotations

from django.db import models

from governance.models.base import TimestampedModel


class ModelPrice(TimestampedModel):
    """List prices for a model family, in micro-dollars per million tokens.

    Versioned by `effective_from`: a request is priced by the newest row whose
    effective_from is not after the request, so old ledger rows keep their cost.
    When the whole prompt (input + cache read + cache write) exceeds
    `long_context_threshold`, every category uses the long_* price instead.
    """

    model_pattern = models.CharField(
        max_length=200, help_text="Model id or shell pattern, e.g. claude-sonnet-4-5*."
    )
    effective_from = models.DateTimeField()
    input_per_mtok = models.BigIntegerField()
    output_per_mtok = models.BigIntegerField()
    cache_write_5m_per_mtok = models.BigIntegerField()
    cache_write_1h_per_mtok = models.BigIntegerField()
    cache_read_per_mtok = models.BigIntegerField()
    long_context_threshold = models.PositiveIntegerField(null=True, blank=True)
    long_input_per_mtok = models.BigIntegerField(null=True, blank=True)
    long_output_per_mtok = models.BigIntegerField(null=True, blank=True)
    long_cache_write_5m_per_mtok = models.BigIntegerField(null=True, blank=True)
    long_cache_write_1h_per_mtok = models.BigIntegerField(null=True, blank=True)
    long_cache_read_per_mtok = models.BigIntegerField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["model_pattern", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_pattern", "effective_from"], name="price_unique_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_pattern} from {self.effective_from:%Y-%m-%d}"
