"""Lets a checkout run its own suites: the plugin itself comes in through the pytest11 entry point
(`pip install -e .`); this file only keeps generated output out of collection."""

collect_ignore = ["reports", ".venv", "scripts"]
