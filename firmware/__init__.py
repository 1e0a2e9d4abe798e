"""Haneul firmware package."""
