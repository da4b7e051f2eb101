"""Thin adapters that run paradecode's rules inside other engines (diffusers, lm-evaluation-harness).

Each imports its engine; none re-implements a step. Import them by module, e.g.
``import paradecode.integrations.diffusers as pd`` or ``import paradecode.integrations.lm_eval``
(which registers the lm-eval model ``paradecode``).
"""
