"""Bridges to other image-quality toolkits. Each submodule imports its toolkit only when called."""
