"""Clients shared by the providers and the training CLI: cloud metadata, credentials, HTTP."""
