"""User-data (boot script) templates and their renderer."""
