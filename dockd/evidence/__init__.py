"""Evidence primitives: durable writes (tmp, fsync, rename, directory fsync), the one read-and-hash
pipeline, the station's Ed25519 key and signed RFC 8785 manifests.

Shared by the station and the agency tools; imports only the core.
"""
