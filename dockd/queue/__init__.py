"""The durable SQLite queue: the single source of truth for clips, cameras, uploads and the audit log.

Every state change is validated by :mod:`dockd.core.lifecycle` and committed with its audit event in
one transaction, before the side effect it allows. Imports only the core.
"""
