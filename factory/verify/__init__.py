"""Verification cascade: answer extraction, rule-based checks, (later) LLM judge."""
