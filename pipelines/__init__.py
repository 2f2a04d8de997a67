"""Pipelines composed from the components, and tools to compile and run them."""
