"""Central tools for the whole agency, beside the station side: trust (station keys and their
enrolment), completeness review, disclosure to prosecution and defence, the fleet view.

They work on central storage and share the core, the evidence primitives, the queue format and the
storage backends; they never import the station pipeline or the camera side (.importlinter).
"""
