"""Pulumi dynamic providers, one per file."""
