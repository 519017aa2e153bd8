"""Data: MMSA loaders, the safe converted format, and the synthetic benchmark."""
