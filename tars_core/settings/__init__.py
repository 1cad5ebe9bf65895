"""The config sections, one module each, declared as frozen dataclasses."""
