"""`dockd fleet`: the agency's view of every station and camera from their signed heartbeats."""
