"""Engine adapters (registry.py finds them: built-ins and entry points), composed into deployments by
compose.py from the engine-independent base.py and the engine's YAML."""
