"""Emulation stage: turn a :class:`corridor.plan.Plan` into a running network (needs root)."""
