"""Prefect flows: each composes one stage's tasks in the order the standard requires."""
