"""The pure core: clip states and transitions, camera-state policy, the audit hash chain, domain events
and identities, operator-facing errors.

No I/O: nothing here opens a file, a socket, a process or a database, reads a clock or logs; the
import contract (.importlinter) enforces it. Policy is decided here and tested without threads;
adapters in the layers above do the I/O the verdicts allow.
"""
