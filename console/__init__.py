"""The operators' web console (/console/): the fleet at a glance, the review queue and approvals, a service's
timeline, and search. Server-rendered Django templates with htmx (vendored in static/console/); every button
calls the same service function as the API, with the console as the audit source (docs/console.md).

Its pages are rooms side by side (fleet, queue, timeline, search), each with `selectors.py` (reads shaped for
the page, built on the selectors of healing, recovery and core) and `views.py`; what they share sits here:
`access.py` (who may see and act), `acting.py` (how an action answers), `sparklines.py`.
"""
