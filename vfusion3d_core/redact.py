"""Keep credentials out of everything the project writes: manifests, MLflow params, logs.

Credentials come only from the environment (``MLFLOW_TRACKING_URI``, ``AWS_*`` for dagster-aws, ...);
nothing the project writes should contain one. ``redact`` replaces, recursively in dicts / lists /
strings:

- the value of any key that looks like a credential (a name part such as ``password``, ``secret``,
  ``token``, ``apikey``, ``credential``, ``auth``; or ``api_key`` / ``access_key`` / ``private_key``),
- the password of a URL with user info (``https://user:pw@host`` -> ``https://user:***@host``),
- any literal occurrence of the value of such an environment variable (at least 8 characters).

Names like ``max_text_tokens`` or ``shard_keys`` are not credentials and are kept.
"""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "***"
_SECRET_PARTS = {"password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "apikey", "credential",
                 "credentials", "auth", "authorization", "cookie"}
_SECRET_PAIRS = ("api_key", "access_key", "private_key", "secret_key", "client_secret")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*):(?P<pw>[^@/\s]+)@")
_MIN_ENV_SECRET = 8


def is_secret_key(name: str) -> bool:
    """Whether a config / environment key names a credential."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name)).lower()
    parts = [p for p in re.split(r"[^a-z0-9]+", snake) if p]
    joined = "_".join(parts)
    return any(p in _SECRET_PARTS for p in parts) or any(pair in joined for pair in _SECRET_PAIRS)


def env_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """Values of credential-like environment variables (long enough to be matched safely), longest first."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if is_secret_key(k) and len(v) >= _MIN_ENV_SECRET}, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` without URL passwords or environment secret values."""
    out = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{REDACTED}@", text)
    for s in env_secrets() if secrets is None else secrets:
        out = out.replace(s, REDACTED)
    return out


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of ``obj`` (dict / list / tuple / str / scalar) with credentials replaced by ``***``."""
    secrets = env_secrets() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_key(k) and obj[k] not in (None, "") else redact(obj[k], secrets))
                for k in obj}
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj
