"""Pipelines composed from the components, and tools to compile and run them."""

from pipelines import kfp_task_speed

kfp_task_speed.install()
