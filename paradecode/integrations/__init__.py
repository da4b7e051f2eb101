"""Thin adapters that run paradecode's rules inside other engines (diffusers, ...).

Each imports its engine; none re-implements a step. Import them by module, e.g.
``import paradecode.integrations.diffusers as pd``.
"""
