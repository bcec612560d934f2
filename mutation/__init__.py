"""Mutation testing of the core modules with cosmic-ray (`make mutate`; see README.md)."""
