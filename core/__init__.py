"""The vocabulary every layer imports, at the bottom of the import graph: units and
windows, identity and naming rules, rejection reasons, the error root, log formatting.
It imports nothing else of the project."""
