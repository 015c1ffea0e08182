"""The performance benchmark behind ``spips-bench bench``: throughput, memory and parity with peer packages."""
