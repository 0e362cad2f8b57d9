"""The registry a config names: ``open_registry`` picks the implementation of the interface in
components/register/backends.py (MLflow or Vertex AI Model Registry).

Its own module so that the implementations import the interface without it importing them back.
"""

from __future__ import annotations

from components.register.backends import Registry, RegistryError


def open_registry(
    backend: str = "mlflow",
    *,
    tracking_uri: str = "",
    project: str = "",
    region: str = "",
    staging_bucket: str = "",
    serving_image: str = "",
) -> Registry:
    """The registry a config names (``registry.backend``); MLflow needs only ``tracking_uri`` ("" = the
    embedded sqlite store), Vertex the project, region and a gs:// staging location for the weights."""
    if backend == "mlflow":
        from components.register.mlflow_registry import MlflowRegistry

        return MlflowRegistry(tracking_uri)
    if backend == "vertex":
        from components.register.vertex_registry import VertexRegistry

        return VertexRegistry(
            project=project, region=region, staging_bucket=staging_bucket, serving_image=serving_image
        )
    raise RegistryError(f"registry backend {backend!r}: use mlflow or vertex")
