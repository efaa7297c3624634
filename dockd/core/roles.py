"""What an enrolled key may sign (its roles) and who can hold one (subject kinds): the trust log's
vocabulary, in the core so that the command line can offer the choices without loading cryptography."""

from __future__ import annotations

ROLES = ("station", "reviewer", "discloser", "recipient")
SUBJECT_KINDS = ("station", "office", "person")
