"""Haneul rtl package."""
