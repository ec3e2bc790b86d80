"""Emulation stage: turn a :class:`corridor.planning.plan.Plan` into a running network (needs root)."""
