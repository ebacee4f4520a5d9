"""Error learning: which recovery works for which error (docs/learning.md).

Every plan, server-side retry job and healing run ends with a result; this room folds each result, once, into
effectiveness figures per (error pattern, action) and per (service, error class, action), recent results
weighted more than old ones, and answers the planner which action has proven best."""
