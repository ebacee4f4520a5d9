"""A service's page (/console/services/<name>/): its timeline, newest first, and the operator's controls."""
