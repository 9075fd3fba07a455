"""casprof: probe networks, cost measurement and versioned cost profiles for CAS."""

__version__ = "0.1.0"
