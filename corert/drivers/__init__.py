"""Pluggable drivers, one family per folder: storage, cgroups, network, security."""
