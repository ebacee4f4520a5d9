"""Search (/console/search/?q=): services, patterns, tasks, escalations, runs and agents, grouped by kind."""
