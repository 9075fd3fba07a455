"""Training and evaluation of a derived CAS network on semantic segmentation (``cas train``, ``cas eval``)."""
