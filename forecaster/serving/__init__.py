"""Model + new prices -> nightly predictions: the all-or-nothing nightly run,
its runs ledger, the daemon, shards, and the questions asked of predictions.

Never imports training (tests/test_layers.py), so never loads torch.
"""
