"""The price columns a model reads, in the order it reads them."""

FEATURES = ("open", "high", "low", "close")
CLOSE = FEATURES.index("close")
