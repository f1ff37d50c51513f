"""The HTTP side: an aiohttp application factory for health, API and the supervisors' panel.

Owns routes, typed application keys and background tasks started in ``cleanup_ctx``. So far it
serves ``/healthz``, which reports whether AMI, the database and the bus are up; the panel and the
API are tracked as their own issue.
"""
