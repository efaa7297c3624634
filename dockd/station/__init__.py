"""The station pipeline and its wiring: offload (camera -> staging), upload, the wipe gate, custody
exports of the audit log, the daemon that runs them, runtime glue, status and metrics.

Uses the camera side, storage, the queue, evidence and the core; used only by the command line.
"""
