"""Webhook and Slack alert URLs move from `target` (plain) to `secret_target` (Fernet)."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

from governance import crypto

URL_KINDS = ("webhook", "slack")


def encrypt_urls(apps: Any, schema_editor: Any) -> None:
    AlertChannel = apps.get_model("telemetry", "AlertChannel")
    for channel in AlertChannel.objects.filter(kind__in=URL_KINDS).exclude(target=""):
        AlertChannel.objects.filter(pk=channel.pk).update(
            secret_target=crypto.encrypt_credentials({"url": channel.target}), target=""
        )


def decrypt_urls(apps: Any, schema_editor: Any) -> None:
    AlertChannel = apps.get_model("telemetry", "AlertChannel")
    for channel in AlertChannel.objects.filter(kind__in=URL_KINDS).exclude(secret_target=""):
        url = crypto.decrypt_credentials(channel.secret_target).get("url", "")
        AlertChannel.objects.filter(pk=channel.pk).update(target=url, secret_target="")


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0005_usage_cost_estimated_error_message"),
    ]

    operations = [
        migrations.AddField(
            model_name="alertchannel",
            name="secret_target",
            field=models.TextField(blank=True, default="", editable=False),
        ),
        migrations.AlterField(
            model_name="alertchannel",
            name="target",
            field=models.CharField(
                blank=True,
                help_text="Email addresses. A webhook URL is stored encrypted in secret_target.",
                max_length=500,
            ),
        ),
        migrations.RunPython(encrypt_urls, decrypt_urls),
    ]
