"""Linen modules of every model family and the family registry.

layers.py (blocks shared by every family), singan.py, agan.py, consingan.py (one
file per family: its modules and its `Family` record), family.py (the record
type), families.py (the registry: `families.get(kind)`).
"""
