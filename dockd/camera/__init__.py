"""The camera side: dock/undock sources (watched directories, udev), hardened mounts, the privileged
mount helper, the capability drop, and the walker of hostile camera volumes.

Knows nothing of storage (independent of :mod:`dockd.storage`) or of the station pipeline.
"""
