"""The fleet page (/console/): one row per service, worst first, refreshing itself."""
