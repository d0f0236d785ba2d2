"""Data the project owns or reads: synthetic scenes and dataset folders."""
