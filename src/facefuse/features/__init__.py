"""Features: extraction from any trunk, the feature store, fusion methods and probes."""
