"""Moved to edge/first_boot.py (what runs on the VM); kept so existing imports keep working."""

from edge.first_boot import *  # noqa: F403
