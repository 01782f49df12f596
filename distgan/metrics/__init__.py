"""Sample-quality metrics: pure functions on features, detectors, cached real statistics."""
