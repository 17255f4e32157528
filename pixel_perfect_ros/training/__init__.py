"""Training of the tiny bundled models: a discriminative baseline whose frozen encoder gives a tiny PPD
its semantics (see ``train.py``)."""
