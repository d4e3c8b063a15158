"""Felis YAML table definitions, installed as package data of skydp (read by skydp.tables).

This file only makes the directory a regular package, so importlib.resources finds the YAMLs in
editable installs too (setuptools' editable finder cannot resolve nested namespace packages).
"""
