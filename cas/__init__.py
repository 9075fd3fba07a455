"""``cas``: the umbrella command line of the CAS toolkit (search, train, eval, deploy, profile)."""
