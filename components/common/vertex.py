"""``aiplatform.init`` as every slmforge process that calls Vertex AI does it (submit, runs, the deploy
step).

Endpoint: ``$SLMFORGE_VERTEX_ENDPOINT``, read when a call is made (never at import), overrides Google's
regional endpoint. ``HOST[:PORT]`` (e.g. a Private Service Connect endpoint) is used over REST with
Application Default Credentials. ``http://HOST:PORT`` is a local stand-in (tests/loopback_vertex.py): plain
HTTP carries no credentials, so the client sends none (AnonymousCredentials), the convention
google-cloud-storage follows for ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import os
from typing import Any

ENDPOINT_ENV = "SLMFORGE_VERTEX_ENDPOINT"


def vertex_init(project: str, location: str, **settings: Any) -> None:
    """``aiplatform.init`` for ``project``/``location`` (plus ``settings``, e.g. ``experiment``), through
    ``$SLMFORGE_VERTEX_ENDPOINT`` when it is set (see the module docstring)."""
    from google.cloud import aiplatform

    endpoint = os.environ.get(ENDPOINT_ENV, "").strip()
    if endpoint:
        settings.update(api_endpoint=endpoint, api_transport="rest")
        if endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            settings["credentials"] = AnonymousCredentials()
    aiplatform.init(project=project, location=location, **settings)
