"""OCI runtime config layer: defaults (`spec`), loading and validation, `features`, mount options, units.

Submodules are imported on demand (cold start): `from corert.spec.load import load_config, validate`.
"""
