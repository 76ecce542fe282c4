"""The docker-like front door: image config + run options -> OCI config; managed containers."""
