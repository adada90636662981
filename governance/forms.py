"""Admin forms: dollars in, micro-dollars stored, pattern lists as text, write-only secrets."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models

from governance.models import (
    Budget,
    MCPServer,
    MCPToolGrant,
    MCPToolPrice,
    ModelPolicy,
    ModelPrice,
    Organization,
    Project,
    Provider,
    Team,
    VirtualKey,
)
from governance.money import MoneyError, micros_to_usd, usd_to_micros
from governance.services import mcp, providers
from governance.services.prices import RATE_FIELDS

if TYPE_CHECKING:
    ModelForm = forms.ModelForm
else:

    class ModelForm(forms.ModelForm):
        """django-stubs types ModelForm as generic; the runtime class only needs to allow it."""

        def __class_getitem__(cls, _item: Any) -> Any:
            return cls


# --- fields ----------------------------------------------------------------------------------


def usd_amount(micros: int) -> Decimal:
    """Micro-dollars as a Decimal that reads like money: 1500.50, 0.00, 0.000150."""
    usd = micros_to_usd(micros)
    if micros % 10_000 == 0:
        return usd.quantize(Decimal("0.01"))
    return usd.normalize()


def usd_field(label: str, *, required: bool = True, help_text: str = "") -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        required=required,
        min_value=Decimal(0),
        max_digits=18,
        decimal_places=6,
        help_text=help_text,
    )


class PatternListField(forms.CharField):
    """A list of shell patterns typed as `claude-opus-*, claude-sonnet-*` (commas or lines)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 40}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list):
            return [str(item) for item in value]
        text = super().to_python(value) or ""
        return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]

    def has_changed(self, initial: Any, data: Any) -> bool:
        return list(initial or []) != self.to_python(data)


class ThresholdsField(PatternListField):
    """Alert thresholds in percent, typed as `50, 80, 100`."""

    def to_python(self, value: Any) -> list[int]:  # type: ignore[override]
        items = super().to_python(value)
        try:
            return [int(item) for item in items]
        except ValueError as exc:
            raise ValidationError("enter whole percentages, e.g. 50, 80, 100") from exc


class UsdFieldsForm(ModelForm[Any]):
    """Shows integer micro-dollar model fields as dollar amounts.

    `usd_fields` maps a form field (dollars, Decimal) to the model field (micro-dollars) it
    edits; the conversion is exact (governance.money), never through floats.
    """

    usd_fields: dict[str, str] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for form_name, model_name in self.usd_fields.items():
            micros = getattr(self.instance, model_name, None)
            if form_name in self.fields and micros is not None:
                self.initial.setdefault(form_name, usd_amount(micros))

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        for form_name, model_name in self.usd_fields.items():
            if form_name not in self.fields or form_name not in cleaned:
                continue
            amount = cleaned[form_name]
            try:
                micros = None if amount is None else usd_to_micros(amount)
            except MoneyError as exc:
                self.add_error(form_name, str(exc))
                continue
            setattr(self.instance, model_name, micros)
        return cleaned


# --- budgets ---------------------------------------------------------------------------------


class BudgetForm(UsdFieldsForm):
    """A budget with its amount in dollars. Inline, it takes its organization from the page."""

    usd_fields = {"amount_usd": "amount_micros"}

    amount_usd = usd_field("Amount (USD)", help_text="e.g. 1500.50")
    model_patterns = PatternListField(
        label="Models", help_text="Only for these models, e.g. claude-opus-*; blank: all models."
    )
    provider_names = PatternListField(label="Providers", help_text="Blank: every provider.")
    alert_thresholds = ThresholdsField(label="Alerts at (%)", help_text="e.g. 50, 80, 100")

    class Meta:
        model = Budget
        fields = (
            "organization",
            "team",
            "project",
            "virtual_key",
            "period",
            "model_patterns",
            "provider_names",
            "alert_thresholds",
            "on_exhaust",
            "downgrade_model",
        )

    def __init__(self, *args: Any, parent_object: models.Model | None = None, **kwargs: Any):
        self.parent_object = parent_object
        super().__init__(*args, **kwargs)
        if "organization" in self.fields:
            self.fields["organization"].required = False
            self.fields["organization"].help_text = "Blank: the organization of the owner."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "organization" in self.fields:
            self._fill_organization_from_owner(cleaned)
        else:
            organization = organization_of(self.parent_object)
            if organization is not None:
                self.instance.organization = organization
        return cleaned

    def _fill_organization_from_owner(self, cleaned: dict[str, Any]) -> None:
        if cleaned.get("organization") is not None:
            return
        for owner in (cleaned.get(name) for name in ("virtual_key", "team", "project")):
            if owner is not None:
                cleaned["organization"] = owner.organization
                return
        if not self.has_error("organization"):
            self.add_error("organization", "choose an organization or an owner")


def organization_of(owner: models.Model | None) -> Organization | None:
    """The organization an inline's parent row belongs to (None while it is still invalid)."""
    if isinstance(owner, Organization):
        return owner
    if isinstance(owner, Team | Project | VirtualKey) and owner.organization_id is not None:
        return owner.organization
    return None


class ParentAwareInlineFormSet(forms.BaseInlineFormSet):  # type: ignore[type-arg]
    """Hands each form the page's object, so a budget inline can take its organization."""

    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_form_kwargs(index)
        kwargs["parent_object"] = self.instance
        return kwargs


# --- limits and grants -----------------------------------------------------------------------


class ModelPolicyForm(ModelForm[ModelPolicy]):
    allowed_patterns = PatternListField(
        label="Allowed models", help_text="e.g. claude-*; blank allows every model."
    )
    denied_patterns = PatternListField(
        label="Denied models", help_text="A deny match always wins, e.g. claude-opus-*."
    )

    class Meta:
        model = ModelPolicy
        fields = ("team", "virtual_key", "allowed_patterns", "denied_patterns", "overrides")


class MCPToolGrantForm(ModelForm[MCPToolGrant]):
    tool_patterns = PatternListField(
        label="Allowed tools", help_text="e.g. search_*, get_*; blank allows no tool at all."
    )
    denied_patterns = PatternListField(
        label="Denied tools", help_text="A deny match always wins, e.g. delete_*."
    )

    class Meta:
        model = MCPToolGrant
        fields = (
            "server",
            "organization",
            "team",
            "project",
            "virtual_key",
            "tool_patterns",
            "denied_patterns",
        )


# --- prices ----------------------------------------------------------------------------------


class ModelPriceForm(UsdFieldsForm):
    """List prices in dollars per million tokens; stored as micro-dollars per million."""

    usd_fields = {
        **{f"{rate}_usd": f"{rate}_per_mtok" for rate in RATE_FIELDS},
        **{f"long_{rate}_usd": f"long_{rate}_per_mtok" for rate in RATE_FIELDS},
    }

    input_usd = usd_field("Input $/MTok")
    output_usd = usd_field("Output $/MTok")
    cache_write_5m_usd = usd_field("Cache write (5 min) $/MTok")
    cache_write_1h_usd = usd_field("Cache write (1 h) $/MTok")
    cache_read_usd = usd_field("Cache read $/MTok")
    long_input_usd = usd_field("Input $/MTok", required=False)
    long_output_usd = usd_field("Output $/MTok", required=False)
    long_cache_write_5m_usd = usd_field("Cache write (5 min) $/MTok", required=False)
    long_cache_write_1h_usd = usd_field("Cache write (1 h) $/MTok", required=False)
    long_cache_read_usd = usd_field("Cache read $/MTok", required=False)

    class Meta:
        model = ModelPrice
        fields = ("model_pattern", "effective_from", "long_context_threshold", "note")


# --- providers -------------------------------------------------------------------------------

# Credential names the provider adapters read; any subset may be set.
CREDENTIAL_FIELDS = {
    "api_key": "API key",
    "auth_token": "Bearer token",
    "access_key_id": "AWS access key id",
    "secret_access_key": "AWS secret access key",
    "session_token": "AWS session token",
    "service_account_json": "Google service account JSON",
}
KEEP_HELP = "Write-only: never shown. Leave blank to keep the current value."


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value back, not even after a form error."""

    def format_value(self, value: Any) -> None:
        return None


def _credential_field(name: str) -> forms.CharField:
    widget: forms.Widget = (
        WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off"})
        if name == "service_account_json"
        else forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
    )
    return forms.CharField(
        label=CREDENTIAL_FIELDS[name],
        required=False,
        strip=True,
        widget=widget,
        help_text=KEEP_HELP,
    )


def https_urls(db_field: models.Field[Any, Any], **kwargs: Any) -> forms.Field | None:
    """Form fields as Django 6 will make them: a URL typed without a scheme means https."""
    if isinstance(db_field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return db_field.formfield(**kwargs)


class ProviderForm(ModelForm[Provider]):
    """Non-secret settings plus write-only credential fields (saved encrypted by the service)."""

    api_key = _credential_field("api_key")
    auth_token = _credential_field("auth_token")
    access_key_id = _credential_field("access_key_id")
    secret_access_key = _credential_field("secret_access_key")
    session_token = _credential_field("session_token")
    service_account_json = _credential_field("service_account_json")
    forget_credentials = forms.MultipleChoiceField(
        label="Forget credentials",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Remove these stored credential fields.",
    )

    class Meta:
        model = Provider
        fields = ("name", "kind", "base_url", "region", "settings", "enabled")
        formfield_callback = https_urls

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            stored = providers.credential_fields(self.instance) if self.instance.pk else []
        except ImproperlyConfigured:  # undecryptable: the page still opens and says so
            stored = []
        forget = self.fields["forget_credentials"]
        assert isinstance(forget, forms.MultipleChoiceField)
        forget.choices = [(name, name) for name in stored]

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        # self.instance is still the stored provider here: the form's values reach it later.
        if self.instance.pk is not None and "base_url" in self.cleaned_data:
            try:
                providers.check_base_url_change(
                    self.instance,
                    base_url=self.cleaned_data["base_url"],
                    entered=self.credential_updates(),
                    forgotten=self.credentials_to_forget(),
                )
            except ValidationError as exc:
                self.add_error(None, exc)
        return cleaned

    def credential_updates(self) -> dict[str, str]:
        return {
            name: self.cleaned_data[name]
            for name in CREDENTIAL_FIELDS
            if self.cleaned_data.get(name)
        }

    def credentials_to_forget(self) -> list[str]:
        return list(self.cleaned_data.get("forget_credentials") or [])


# --- MCP servers -----------------------------------------------------------------------------


def _secret_lines(text: str, separator: str) -> dict[str, str]:
    """`Name: value` (or `NAME=value`) lines as a mapping; raises for a line without one."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, found, value = line.partition(separator)
        if not found or not name.strip():
            # The line itself is never echoed: it holds a secret.
            raise ValidationError(f"line {number}: write NAME{separator} value")
        values[name.strip()] = value.strip()
    return values


class MCPServerForm(UsdFieldsForm):
    """Settings plus write-only credentials: headers (HTTP) and secret variables (stdio)."""

    usd_fields = {
        "price_per_call_usd": "price_per_call_micros",
        "price_per_kb_usd": "price_per_kb_micros",
    }

    price_per_call_usd = usd_field("Price per call (USD)", help_text="e.g. 0.001")
    price_per_kb_usd = usd_field(
        "Price per started KB of result (USD)", help_text="1 KB = 1024 bytes, e.g. 0.0001"
    )
    new_headers = forms.CharField(
        label="Set headers",
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="HTTP: one `Name: value` a line, e.g. Authorization: Bearer …. "
        "Write-only: never shown; replaces a stored header of the same name.",
    )
    new_secret_env = forms.CharField(
        label="Set secret variables",
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="stdio: one `NAME=value` a line. Write-only: never shown.",
    )
    forget_credentials = forms.MultipleChoiceField(
        label="Forget credentials",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Remove these stored headers and variables.",
    )

    class Meta:
        model = MCPServer
        fields = (
            "name",
            "transport",
            "url",
            "command",
            "args",
            "env",
            "timeout_seconds",
            "code_mode",
            "enabled",
        )
        formfield_callback = https_urls

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            stored = mcp.credential_names(self.instance) if self.instance.pk else []
        except ImproperlyConfigured:  # undecryptable: the page still opens and says so
            stored = []
        forget = self.fields["forget_credentials"]
        assert isinstance(forget, forms.MultipleChoiceField)
        forget.choices = [(name, mcp.credential_label(name)) for name in stored]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        try:
            self._updates = mcp.checked_credentials(
                headers=_secret_lines(cleaned.get("new_headers") or "", ":"),
                env=_secret_lines(cleaned.get("new_secret_env") or "", "="),
            )
        except ValidationError as exc:
            self._updates = {}
            for message in exc.messages:
                self.add_error(None, message)
        # self.instance still holds the stored destination here (its fields are set later).
        if self.instance.pk is not None and not self.errors:
            stored = MCPServer.objects.filter(pk=self.instance.pk).first()
            if stored is not None:
                self._check_destination(stored, cleaned)
        return cleaned

    def _check_destination(self, stored: MCPServer, cleaned: dict[str, Any]) -> None:
        moved = MCPServer(
            transport=cleaned.get("transport") or stored.transport,
            url=cleaned.get("url") or "",
            command=cleaned.get("command") or "",
            args=cleaned.get("args") or [],
        )
        try:
            mcp.check_destination_change(
                stored,
                destination=moved.destination,
                entered=self.credential_updates(),
                forgotten=self.credentials_to_forget(),
            )
        except ValidationError as exc:
            self.add_error(None, exc)

    def credential_updates(self) -> dict[str, str]:
        return dict(getattr(self, "_updates", {}))

    def credentials_to_forget(self) -> list[str]:
        return list(self.cleaned_data.get("forget_credentials") or [])


class MCPToolPriceForm(UsdFieldsForm):
    usd_fields = {"per_call_usd": "per_call_micros", "per_kb_usd": "per_kb_micros"}

    per_call_usd = usd_field("Per call (USD)")
    per_kb_usd = usd_field("Per started KB (USD)")

    class Meta:
        model = MCPToolPrice
        fields = ("tool_pattern", "position")


# --- virtual keys ----------------------------------------------------------------------------


class VirtualKeyAddForm(ModelForm[VirtualKey]):
    """What a new key needs; the secret is generated by the service and shown once."""

    class Meta:
        model = VirtualKey
        fields = (
            "name",
            "organization",
            "team",
            "project",
            "parent",
            "owner",
            "expires_at",
            "log_content",
        )
        help_texts = {
            "parent": "Makes a sub-key: it takes the parent's team and project, and is held "
            "to every limit of the parent as well as its own.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "organization" in self.fields:
            self.fields["organization"].required = False
            self.fields["organization"].help_text = "Blank: the organization of the team."

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("organization") is None:
            for owner in (cleaned.get(name) for name in ("parent", "team", "project")):
                if owner is not None:
                    cleaned["organization"] = owner.organization
                    break
            else:
                if not self.has_error("organization"):
                    self.add_error("organization", "choose an organization or a team")
        return cleaned


class RevokeKeysForm(forms.Form):
    reason = forms.CharField(required=False, max_length=300, help_text="Recorded in the audit log.")


class RotateKeysForm(forms.Form):
    grace_hours = forms.IntegerField(
        label="Grace period (hours)",
        min_value=0,
        max_value=24 * 30,
        initial=24,
        help_text="How long the old secret keeps working; 0 stops it now.",
    )
