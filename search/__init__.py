"""CAS architecture search: datasets, metrics, supernet, cost loss and the search loop (DESIGN §1)."""
