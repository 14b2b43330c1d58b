"""Prices -> model: windows and their split, the stacked LSTM, the training
loop, held-out metrics against naive, checkpoints and plots.

Imports data and the common modules; torch lives here (and in artifact/export).
"""
