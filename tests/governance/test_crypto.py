from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from governance import crypto

SECRET = "upstream-api-key-0123456789abcdef"


def test_credentials_round_trip_through_encryption() -> None:
    credentials = {"api_key": SECRET, "org": "acme"}

    token = crypto.encrypt_credentials(credentials)

    assert crypto.decrypt_credentials(token) == credentials


def test_ciphertext_does_not_contain_the_secret() -> None:
    token = crypto.encrypt_credentials({"api_key": SECRET})

    assert SECRET not in token
    assert "api_key" not in token


def test_encrypting_twice_gives_different_ciphertexts() -> None:
    first = crypto.encrypt_credentials({"api_key": SECRET})
    second = crypto.encrypt_credentials({"api_key": SECRET})

    assert first != second
    assert crypto.decrypt_credentials(first) == crypto.decrypt_credentials(second)


def test_no_credentials_are_stored_as_empty_text() -> None:
    assert crypto.encrypt_credentials({}) == ""
    assert crypto.decrypt_credentials("") == {}


def test_explicit_encryption_key_is_used() -> None:
    key = Fernet.generate_key()
    with override_settings(GATEWAY_ENCRYPTION_KEY=key.decode()):
        token = crypto.encrypt_credentials({"api_key": SECRET})

    assert Fernet(key).decrypt(token.encode()) == b'{"api_key": "' + SECRET.encode() + b'"}'


def test_wrong_encryption_key_is_a_clear_configuration_error() -> None:
    with override_settings(GATEWAY_ENCRYPTION_KEY=Fernet.generate_key().decode()):
        token = crypto.encrypt_credentials({"api_key": SECRET})

    with (
        override_settings(GATEWAY_ENCRYPTION_KEY=Fernet.generate_key().decode()),
        pytest.raises(ImproperlyConfigured, match="GATEWAY_ENCRYPTION_KEY changed") as error,
    ):
        crypto.decrypt_credentials(token)

    assert SECRET not in str(error.value)


def test_changing_secret_key_loses_credentials_derived_from_it() -> None:
    with override_settings(GATEWAY_ENCRYPTION_KEY="", SECRET_KEY="first-secret-key"):
        token = crypto.encrypt_credentials({"api_key": SECRET})

    with (
        override_settings(GATEWAY_ENCRYPTION_KEY="", SECRET_KEY="second-secret-key"),
        pytest.raises(ImproperlyConfigured, match="cannot be decrypted"),
    ):
        crypto.decrypt_credentials(token)


@pytest.mark.parametrize("bad_key", ["not-a-fernet-key", "c2hvcnQ=", "x" * 44])
def test_malformed_encryption_key_is_a_clear_configuration_error(bad_key: str) -> None:
    with (
        override_settings(GATEWAY_ENCRYPTION_KEY=bad_key),
        pytest.raises(ImproperlyConfigured, match="GATEWAY_ENCRYPTION_KEY must be a Fernet key"),
    ):
        crypto.encrypt_credentials({"api_key": SECRET})


def test_corrupted_ciphertext_is_a_configuration_error() -> None:
    token = crypto.encrypt_credentials({"api_key": SECRET})

    with pytest.raises(ImproperlyConfigured):
        crypto.decrypt_credentials(token[:-4] + "AAAA")
