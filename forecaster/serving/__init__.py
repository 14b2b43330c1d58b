"""Model + new prices -> nightly predictions: the all-or-nothing nightly run,
its runs ledger, which dates are owed, the wait for a night's files, shards,
the registry as a scoring host reads it, and the accuracy report.

Never imports training (tests/test_layers.py), so never loads torch.
"""
