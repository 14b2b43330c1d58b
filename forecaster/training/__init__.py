"""Prices -> model: the chronological split and the scaling fit, the stacked
LSTM, the training loop, held-out metrics against naive, checkpoints, and one
`forecaster train` job (alone or under torchrun).

Imports data and the common modules; torch lives here (and in artifact/export).
"""
