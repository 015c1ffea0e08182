"""A benchmark run: its configuration, plan, scoring loop, ranks, record (``run.json``) and score store."""
