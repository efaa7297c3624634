"""Sources of dock and undock events: watched directories and udev.

Each source translates raw signals into :mod:`dockd.core.events` objects and puts
them on the daemon's event queue; no work runs in a source's own thread.
"""
