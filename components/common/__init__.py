"""Code shared by the stages: config, task rendering and scoring, models, provenance."""
