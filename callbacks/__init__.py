"""Calling back the citizens the hotline missed: one task per caller, dialled agent first."""
