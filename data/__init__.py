"""Dataset configs, class lists and hyper-parameter files (package data)."""
