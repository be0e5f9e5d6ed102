"""File formats for training rows: what `prefs export` writes and `prefs import` reads."""
