"""Periodic work claimed per tick, so that several beat processes never send the same tick twice."""
