"""TARS core: configuration, the settings schema and shared types.

Every other package imports this one; it imports none of them.
"""
