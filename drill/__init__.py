"""The chaos drill that measures recovery against naive retries.

Reserved: the learning and drill issue builds it here, above healing, recovery and core.
"""
