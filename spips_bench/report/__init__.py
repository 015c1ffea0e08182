"""Reports of a run folder: the table renderers, the report builder and ``tables --check``."""
