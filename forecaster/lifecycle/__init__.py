"""Keeping a forecaster running and fresh: the daemon that scores every night
and retrains on a schedule, and the retraining with its promotion gate.

The one layer that reaches both training (torch) and serving: a daemon that
never retrains never loads torch (training is imported inside the retrain job).
"""
