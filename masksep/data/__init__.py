"""Data sets: the embedded synthetic mixtures and readers for real corpora."""
