"""The kubernetes client for the Secrets backend: a dedicated ApiClient, decoding, errors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from mira.domain.config.model import KubernetesSecretsSettings
from mira.domain.ports import SecretsBackendUnavailable

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
Key = tuple[str, str]  # (namespace, name)
UNKNOWN = object()  # a cache entry never filled (None is a Secret known not to exist)


def new_api_client(
    settings: KubernetesSecretsSettings, environ: Mapping[str, str], token_file: str, ca_file: str
) -> Any:
    """A dedicated ApiClient (never the global default configuration)."""
    client, config = kube().client, kube().config
    configuration = client.Configuration()
    configuration.retries = 1  # one retry covers a stale pooled connection; fail fast otherwise
    try:
        if settings.kubeconfig:
            return config.new_client_from_config(
                config_file=settings.kubeconfig,
                context=settings.context,
                persist_config=False,
                client_configuration=configuration,
            )
        loader = config.incluster_config.InClusterConfigLoader(
            token_filename=token_file, cert_filename=ca_file, environ=environ
        )
        loader.load_and_set(configuration)
        _strip_token_newline(configuration)
        return client.ApiClient(configuration)
    except (config.ConfigException, OSError) as exc:
        where = settings.kubeconfig or "in-cluster service account"
        raise SecretsBackendUnavailable(f"kubernetes configuration ({where}): {exc}") from None


def _strip_token_newline(configuration: Any) -> None:
    """Drop the trailing newline of a hand-written token file (the client would send it)."""
    reload_token = configuration.refresh_api_key_hook

    def refresh(cfg: Any) -> None:
        if reload_token is not None:
            reload_token(cfg)
        if token := cfg.api_key.get("BearerToken"):
            cfg.api_key["BearerToken"] = token.rstrip()

    refresh(configuration)
    configuration.refresh_api_key_hook = refresh


def kube() -> Any:
    """The kubernetes package, imported on first use only (importing it costs ~240 ms)."""
    import kubernetes

    return kubernetes


def decode(ref: Key, data: Mapping[str, Any] | None) -> dict[str, str]:
    try:
        return {k: base64.b64decode(v).decode("utf-8") for k, v in (data or {}).items()}
    except (binascii.Error, UnicodeDecodeError):
        raise SecretsBackendUnavailable(
            f"kubernetes secret '{show(ref)}' holds data that is not base64 UTF-8 text"
        ) from None


def translate(exc: Exception, what: str) -> SecretsBackendUnavailable:
    """Map a client error to SecretsBackendUnavailable without echoing response bodies."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return SecretsBackendUnavailable(f"kubernetes API refused access to {what} (HTTP {status})")
    if status is not None:
        return SecretsBackendUnavailable(f"kubernetes API error reading {what} (HTTP {status})")
    return SecretsBackendUnavailable(
        f"kubernetes API unreachable reading {what}: {type(exc).__name__}"
    )


def show(ref: Key) -> str:
    return f"{ref[0]}/{ref[1]}"
