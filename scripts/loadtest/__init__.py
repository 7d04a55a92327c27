"""Stage 5: the Locust smoke load test (open-loop, canary and baseline together)."""
