"""The Kopf operator: reconciles LLMBudget and BurstBudget resources.

Rule of this layer: a thin adapter over ``domain`` and ``store``; it never imports
``webhook``.
"""
