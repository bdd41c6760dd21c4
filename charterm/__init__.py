"""charterm: a character-level LSTM text generator you live in."""

__version__ = "0.9.0"
