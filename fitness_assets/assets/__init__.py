"""Dagster assets, one folder per layer; the folder name is the asset group."""
