"""Haneul boards package."""
