"""The metric zoo: one module per metric family. Modules are imported when a metric is created."""
