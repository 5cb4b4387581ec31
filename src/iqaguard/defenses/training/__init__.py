"""Adversarial-training defenses (a later stage): ``fit`` fine-tunes a metric, ``protect`` returns it."""
