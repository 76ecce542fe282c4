"""Container lifecycle: state store, create/start/kill/delete/exec, query and control verbs.

Deliberately empty of imports: the OCI CLI imports only the submodule a verb needs (cold start).
"""
