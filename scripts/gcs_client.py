"""One way to open a Cloud Storage client: anonymous against an emulator, else ADC."""

from __future__ import annotations

from typing import Any


def storage_client(emulator_host: str | None) -> Any:
    """A ``google.cloud.storage.Client``; ``emulator_host`` (``STORAGE_EMULATOR_HOST``)
    points it at an emulator without credentials. Raises google-auth's
    ``DefaultCredentialsError`` when there are no Application Default Credentials."""
    from google.cloud import storage

    if emulator_host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        endpoint = emulator_host if "://" in emulator_host else f"http://{emulator_host}"
        return storage.Client(
            project="local-emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=endpoint),
        )
    return storage.Client()
