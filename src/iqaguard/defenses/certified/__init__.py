"""Certified defenses (a later stage): ``protect`` returns a smoothed metric with ``certify``."""
