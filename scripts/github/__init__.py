"""GitHub integration: events, the API client, deployment records, comments, reports.

The workflows reach it through the CLI (``python -m scripts github …``, ``deliver``,
``preflight``); it is tested against the fake GitHub API in ``tests/fakes/``.
"""
