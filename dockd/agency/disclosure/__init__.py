"""Disclosure (issue #16): a formal, verifiable hand-over of clips from the police to prosecutors and from
prosecutors to defence, as a signed BagIt 1.0 bag (RFC 8493) that anyone can check offline with the bag and
the agency's pinned root key.

* :mod:`.bagfmt` -- the BagIt text formats, written and parsed strictly (pure);
* :mod:`.writer` -- a bag directory written durably under a temporary name;
* :mod:`.collect` -- what central storage holds about a clip (manifest, sidecars, audit segments, keys);
* :mod:`.create` -- ``dockd disclose create``; :mod:`.verify` -- ``dockd disclose verify``;
* :mod:`.select` -- clips by camera and time range (clip index); :mod:`.incident` -- by incident (review report).

The profile every dockd bag follows is ``dockd-bagit-profile.json`` beside this file.
"""

from __future__ import annotations

from dockd.core.errors import DockdError


class DisclosureFailed(DockdError):
    """disclosure: {}"""
