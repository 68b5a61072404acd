"""The room below every other: config building, registries and device helpers that generators,
features, detectors and the pipeline share (none of them imports upward)."""
