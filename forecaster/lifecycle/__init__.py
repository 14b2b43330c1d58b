"""Keeping a forecaster running and fresh: the daemon (its wiring, schedules,
lock and jobs) that scores every night and retrains on a schedule, the
retraining with its promotion gate, and the registry's decisions.

The one layer that reaches both training (torch) and serving: a daemon that
never retrains never loads torch (training is imported inside the retrain job).
"""
