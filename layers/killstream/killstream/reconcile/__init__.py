"""The reconciler: each UTC day checked against an upstream's history, what is missing recovered."""
