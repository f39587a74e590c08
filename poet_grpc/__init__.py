"""POET service."""
