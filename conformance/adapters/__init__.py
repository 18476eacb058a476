"""Adapters that put real RMSprop implementations behind the :class:`~conformance.candidate.Candidate` protocol."""
