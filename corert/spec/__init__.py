"""OCI runtime config layer: defaults (`spec`), loading and validation, `features`, mount options, units.

Submodules are imported on demand (cold start): `from corert.spec.load import load_config, validate`.
"""

# The runtime-spec version corert implements (state JSON, `spec`, `features`): here rather than in
# defaults.py, so that `corert state` does not load the default spec to print it.
OCI_VERSION = "1.2.0"
