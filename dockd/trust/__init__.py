"""Agency trust: the root-signed, hash-chained trust log and the one verifier of every dockd signature
(:mod:`dockd.trust.log`, no I/O), and its adapter for trust directories, central storage and the
station's own key enrolment (:mod:`dockd.trust.store`).

Shared by the station and the agency tools; uses storage, evidence and the core.
"""
