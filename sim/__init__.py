"""Haneul sim package."""
