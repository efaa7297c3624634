"""``VERIFY.txt``: the offline check of one bag with standard tools only (bash, coreutils, openssl, jq).

It is a bash script as much as a text: comments say what each step proves, and a test runs it literally
(``ROOT=agency-root.pub.pem bash -euo pipefail VERIFY.txt`` in the bag's directory). Pure: builds text.
Every path in it comes from the transfer record and is a plain bag path (:func:`.bagfmt.safe_path`).
"""

from __future__ import annotations

import shlex
from typing import Any

HEAD = """\
# How to check this disclosure bag offline, with standard tools only (bash, coreutils, openssl >= 3, jq).
# Run in the bag's directory:   ROOT=/path/to/agency-root.pub.pem bash -euo pipefail VERIFY.txt
# ROOT is the agency's root public key, obtained from the agency by a separate channel (never from the bag).
# Every command must succeed; the first failure stops the check. `dockd disclose verify BAG --root ROOT`
# performs the same checks and also recomputes every audit segment's hash chain link by link.
T=$(mktemp -d)

# 1. Payload fixity (SHA-256 and SHA-512) and completeness: every file listed, nothing extra, none missing.
sha256sum --strict --quiet -c manifest-sha256.txt
sha512sum --strict --quiet -c manifest-sha512.txt
find data -type f | LC_ALL=C sort > "$T/files"
cut -c67- manifest-sha256.txt | LC_ALL=C sort | diff - "$T/files"

# 2. The tag files (bag-info.txt, transfer.json, case.jsonld, this file, the payload manifests).
sha256sum --strict --quiet -c tagmanifest-sha256.txt
sha512sum --strict --quiet -c tagmanifest-sha512.txt
for f in bagit.txt bag-info.txt manifest-sha256.txt manifest-sha512.txt transfer.json VERIFY.txt discloser.pub.pem; do
  grep -q "  $f\\$" tagmanifest-sha256.txt
done

# 3. The discloser's Ed25519 signatures over the tag manifest (which covers everything above) and the
#    transfer record (RFC 8785 bytes).
openssl pkeyutl -verify -pubin -inkey discloser.pub.pem -rawin -in tagmanifest-sha256.txt \\
  -sigfile tagmanifest-sha256.txt.sig
openssl pkeyutl -verify -pubin -inkey discloser.pub.pem -rawin -in transfer.json -sigfile transfer.json.sig

# 4. The agency trust log in data/trust/log: statement 0 is the pinned root, every statement is signed by it
#    and chained to the one before.
jq -j .public_key data/trust/log/00000000.json | diff - "$ROOT"
prev=null
for s in data/trust/log/*.json; do
  jq -cjS 'del(.signature)' "$s" > "$T/body"; jq -r .signature.value "$s" | base64 -d > "$T/sig"
  openssl pkeyutl -verify -rawin -pubin -inkey "$ROOT" -in "$T/body" -sigfile "$T/sig" > /dev/null
  test "$(jq -r .prev "$s")" = "$prev"
  prev=$(jq -cjS . "$s" | sha256sum | cut -d' ' -f1)
done

# 5. The signing key is enrolled for the discloser role (and not revoked: the second command prints nothing).
K=$(jq -r .sender.key_id transfer.json)
jq -se --arg k "$K" --rawfile pem discloser.pub.pem \\
  'map(select(.kind == "enrol" and .key_id == $k and .public_key == $pem and (.roles | index("discloser"))))
   | length > 0' \\
  data/trust/log/*.json > /dev/null
jq -se --arg k "$K" 'map(select(.kind == "revoke" and .key_id == $k)) | length == 0' data/trust/log/*.json > /dev/null
jq -sr --arg k "$K" 'map(select(.kind == "enrol" and .key_id == $k)) | .[0] | .valid_from + " .. " + .valid_until' \\
  data/trust/log/*.json
jq -r .created_at transfer.json

# 6. Each clip: its station manifest is signed by a key the agency enrolled for that station, and the clip's
#    bytes have the SHA-256 the station signed.
"""

CLIP = """\
# clip {n}: {key}
m={manifest}
jq -sj --arg k "$(jq -r .signature.key_id "$m")" --arg st {station} \\
  'map(select(.kind == "enrol" and .key_id == $k and .subject.name == $st)) | .[0].public_key' \\
  data/trust/log/*.json > "$T/station.pem"
jq -cjS 'del(.signature)' "$m" > "$T/body"; jq -r .signature.value "$m" | base64 -d > "$T/sig"
openssl pkeyutl -verify -rawin -pubin -inkey "$T/station.pem" -in "$T/body" -sigfile "$T/sig"
test "$(sha256sum < {clip} | cut -d' ' -f1)" = "$(jq -r .clip.sha256 "$m")"
"""

SEGMENT = """\
# audit segment {seg}: the head is signed by the station and names this segment's SHA-256
h={head}
jq -sj --arg k "$(jq -r .signature.key_id "$h")" --arg st {station} \\
  'map(select(.kind == "enrol" and .key_id == $k and .subject.name == $st)) | .[0].public_key' \\
  data/trust/log/*.json > "$T/station.pem"
jq -cjS 'del(.signature)' "$h" > "$T/body"; jq -r .signature.value "$h" | base64 -d > "$T/sig"
openssl pkeyutl -verify -rawin -pubin -inkey "$T/station.pem" -in "$T/body" -sigfile "$T/sig"
test "$(sha256sum < {seg} | cut -d' ' -f1)" = "$(jq -r .sha256 "$h")"
"""

TAIL = """
rm -r "$T"
echo "bag verified: fixity, completeness, discloser signatures and enrolment, station manifests, audit heads"
"""


def verify_txt(transfer: dict[str, Any]) -> bytes:
    q = shlex.quote
    parts = [HEAD]
    for n, c in enumerate(transfer["clips"], 1):
        parts.append(CLIP.format(n=n, key=c["object_key"], manifest=q(c["manifests"][0]), station=q(c["station"]),
                                 clip=q(c["path"])))
    segs = sorted({(a["segment"], c["station"]) for c in transfer["clips"] for a in c["audit"]})
    if segs:
        parts.append("\n# 7. The audit segments holding each clip's custody rows.\n")
    for seg, station in segs:
        parts.append(SEGMENT.format(seg=q(seg), head=q(seg[: -len(".jsonl")] + ".head.json"), station=q(station)))
    parts.append(TAIL)
    return "".join(parts).encode("utf-8")
