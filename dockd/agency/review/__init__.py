"""The completeness review (issue #15): every incident, every officer on it, and whether the video exists.

``match`` is the pure rule (no I/O); ``inputs`` reads the roster and the CAD export; ``index`` fetches and
caches the stations' signed clip index; ``justify`` keeps the reviewers' signed justification log; ``report``
writes the signed JSON, the CSV and the HTML.
"""
