"""``case.jsonld``: the disclosure's custody as a CASE 1.5 / UCO graph (JSON-LD). Pure: builds JSON.

What it states, all from the signed transfer record (never more than the bag proves):

* one ``case-investigation:Investigation`` named by the case number, with the disclosure's authority as a
  ``case-investigation:Authorization``;
* each camera as a ``uco-observable:Device`` (its serial), each station as a ``uco-observable:Device``;
* each clip as a ``uco-observable:File`` with its size and SHA-256/SHA-512 (``uco-types:Hash``);
* per clip, the acquisition at the station (a ``case-investigation:InvestigativeAction`` whose object is
  the camera, instrument the station, result the file and a ``case-investigation:ProvenanceRecord``);
* the transfer itself: an ``InvestigativeAction`` performed by the discloser (a ``uco-identity:Identity``)
  whose objects are the files and whose result is the provenance record of the disclosure.

Node ids are ``urn:dockd:...`` names derived from content digests, so the graph of one transfer is
deterministic.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

CONTEXT = {
    "kb": "urn:dockd:kb:",
    "case-investigation": "https://ontology.caseontology.org/case/investigation/",
    "uco-action": "https://ontology.unifiedcyberontology.org/uco/action/",
    "uco-core": "https://ontology.unifiedcyberontology.org/uco/core/",
    "uco-identity": "https://ontology.unifiedcyberontology.org/uco/identity/",
    "uco-observable": "https://ontology.unifiedcyberontology.org/uco/observable/",
    "uco-types": "https://ontology.unifiedcyberontology.org/uco/types/",
    "uco-vocabulary": "https://ontology.unifiedcyberontology.org/uco/vocabulary/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}


def _id(kind: str, *parts: str) -> str:
    """``kb:{kind}-{uuid}``: a name-based UUID (version 5 bits over SHA-256), as UCO suggests ids end."""
    return f"kb:{kind}-{uuid.UUID(bytes=hashlib.sha256(chr(0).join(parts).encode()).digest()[:16], version=5)}"


def _ref(i: str) -> dict[str, str]:
    return {"@id": i}


def _time(t: str) -> dict[str, str]:
    return {"@type": "xsd:dateTime", "@value": t}


def _hash(method: str, value: str, owner: str) -> dict[str, Any]:
    return {"@id": _id("hash", owner, method), "@type": "uco-types:Hash",
            "uco-types:hashMethod": {"@type": "xsd:string", "@value": method},
            "uco-types:hashValue": {"@type": "xsd:hexBinary", "@value": value.upper()}}


def _device(kind: str, name: str) -> dict[str, Any]:
    did = _id("device", kind, name)
    return {"@id": did, "@type": "uco-observable:Device", "uco-core:name": f"{kind} {name}",
            "uco-core:hasFacet": [{"@id": _id("device-facet", kind, name), "@type": "uco-observable:DeviceFacet",
                                   "uco-observable:serialNumber": name}]}


def graph(transfer: dict[str, Any], transfer_sha256: str) -> dict[str, Any]:
    items = {i["path"]: i for i in transfer["items"]}
    nodes: list[dict[str, Any]] = []
    devices: dict[str, dict[str, Any]] = {}
    files, provenance = [], []
    actions = []
    for c in transfer["clips"]:
        cam = devices.setdefault("camera " + c["camera"], _device("camera", c["camera"]))
        st = devices.setdefault("station " + c["station"], _device("station", c["station"]))
        it = items[c["path"]]
        fid = _id("file", c["path"], it["sha256"])
        files.append(fid)
        nodes.append({"@id": fid, "@type": "uco-observable:File", "uco-core:name": c["path"],
                      "uco-core:hasFacet": [
                          {"@id": _id("file-facet", fid), "@type": "uco-observable:FileFacet",
                           "uco-observable:fileName": c["path"].rsplit("/", 1)[-1],
                           "uco-observable:sizeInBytes": {"@type": "xsd:integer", "@value": str(it["size"])}},
                          {"@id": _id("content-facet", fid), "@type": "uco-observable:ContentDataFacet",
                           "uco-observable:hash": [_hash("SHA256", it["sha256"], fid),
                                                   _hash("SHA512", it["sha512"], fid)]}]})
        pid = _id("provenance-acquisition", fid)
        provenance.append(pid)
        nodes.append({"@id": pid, "@type": "case-investigation:ProvenanceRecord",
                      "case-investigation:exhibitNumber": c["object_key"], "uco-core:object": [_ref(fid)]})
        aid = _id("acquisition", fid)
        actions.append(aid)
        act: dict[str, Any] = {"@id": aid, "@type": "case-investigation:InvestigativeAction",
                               "uco-core:name": f"offload of camera {c['camera']} at station {c['station']}",
                               "uco-action:instrument": _ref(st["@id"]), "uco-action:object": [_ref(cam["@id"])],
                               "uco-action:result": [_ref(fid), _ref(pid)]}
        if isinstance(c.get("offloaded_at"), str):
            act["uco-action:endTime"] = _time(c["offloaded_at"])
        nodes.append(act)
    sender = transfer["sender"]
    who = _id("identity", sender["key_id"])
    nodes.append({"@id": who, "@type": "uco-identity:Identity", "uco-core:name": sender["name"]})
    rcp = _id("identity", "recipient", transfer["recipient"]["name"])
    nodes.append({"@id": rcp, "@type": "uco-identity:Identity", "uco-core:name": transfer["recipient"]["name"]})
    auth = _id("authorization", transfer["authority"])
    nodes.append({"@id": auth, "@type": "case-investigation:Authorization",
                  "uco-core:name": transfer["authority"], "case-investigation:authorizationIdentifier":
                  [transfer["authority"]]})
    tp = _id("provenance-transfer", transfer_sha256)
    nodes.append({"@id": tp, "@type": "case-investigation:ProvenanceRecord",
                  "uco-core:description": f"disclosure to {transfer['recipient']['name']}; transfer.json sha256 "
                                          f"{transfer_sha256}", "uco-core:object": [_ref(f) for f in files]})
    tid = _id("transfer", transfer_sha256)
    actions.append(tid)
    nodes.append({"@id": tid, "@type": "case-investigation:InvestigativeAction",
                  "uco-core:name": f"disclosure to {transfer['recipient']['name']} under {transfer['authority']}",
                  "uco-action:performer": _ref(who), "uco-action:participant": [_ref(rcp)],
                  "uco-action:startTime": _time(transfer["created_at"]),
                  "uco-action:object": [_ref(f) for f in files], "uco-action:result": [_ref(tp)]})
    nodes.extend(devices.values())
    nodes.insert(0, {"@id": _id("investigation", transfer["case"]), "@type": "case-investigation:Investigation",
                     "uco-core:name": transfer["case"], "case-investigation:relevantAuthorization": [_ref(auth)],
                     "uco-core:object": [_ref(a) for a in actions] + [_ref(p) for p in provenance] + [_ref(tp)]})
    return {"@context": CONTEXT, "@graph": nodes}


def dumps(transfer: dict[str, Any], transfer_bytes: bytes) -> bytes:
    g = graph(transfer, hashlib.sha256(transfer_bytes).hexdigest())
    return (json.dumps(g, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def check_shape(g: Any, transfer: dict[str, Any]) -> list[str]:
    """The graph's shape as dockd writes it (for ``verify``; ``case_validate`` checks it against CASE)."""
    if not isinstance(g, dict) or not isinstance(g.get("@graph"), list) or g.get("@context") != CONTEXT:
        return ["case.jsonld: not a JSON-LD graph with the dockd CASE context"]
    nodes = [n for n in g["@graph"] if isinstance(n, dict)]
    out = []
    names = {n.get("uco-core:name") for n in nodes if n.get("@type") == "uco-observable:File"}
    for c in transfer.get("clips") or []:
        if isinstance(c, dict) and c.get("path") not in names:
            out.append(f"case.jsonld: no File node for {c.get('path')}")
    if not any(n.get("@type") == "case-investigation:Investigation" and n.get("uco-core:name") == transfer.get("case")
               for n in nodes):
        out.append("case.jsonld: no Investigation named by the case number")
    return out
